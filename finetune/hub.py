"""Share a trained model: an upload to the Hugging Face Hub with the model card (`finetune.model_card`).

    finetune push runs/reviews/best --repo-id user/reviews-sentiment [--private] [--revision v1]
        [--dataset_title "ChnSentiCorp 酒店评论"]

uploads `best/` (model or LoRA adapter, tokenizer, the model's code, the model card, and `onnx/`
when `finetune export` wrote it there) with the run's `metrics.json` and pictures. A LoRA adapter
points at its base model: the base (`base/`) goes to `<repo-id>-base` and the adapter's
`base_model_name_or_path` is set to that repository in the uploaded copy. The token comes from
`HF_TOKEN` or `hf auth login`; it is never written to a file or a log.
"""

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from .model_card import model_card, write_model_card

__all__ = ["model_card", "push_to_hub", "write_model_card"]

logger = logging.getLogger(__name__)

RUN_FILES = ("metrics.json", "training_curves.png", "confusion_matrix.png", "attention.html", "config.yaml")


def _run_dir(model_dir: Path) -> Path:
    return model_dir.parent


def _stage(model_dir: Path, repo_id: str, staging: Path) -> dict[str, Path]:
    """Copies what goes to the Hub into `staging`; returns {repo id: folder} (the adapter's base too)."""
    run_dir = _run_dir(model_dir)
    main = staging / "model"
    shutil.copytree(model_dir, main)
    for name in RUN_FILES:
        if (run_dir / name).exists():
            shutil.copy2(run_dir / name, main / name)
    folders = {repo_id: main}
    adapter = main / "adapter_config.json"
    if adapter.exists():
        base_repo = f"{repo_id}-base"
        config = json.loads(adapter.read_text(encoding="utf-8"))
        base_dir = Path(config["base_model_name_or_path"])
        if not (base_dir / "config.json").exists():
            raise FileNotFoundError(
                f"{adapter.name}: base model {base_dir} not found; push needs it beside the adapter"
            )
        shutil.copytree(base_dir, staging / "base")
        config["base_model_name_or_path"] = base_repo
        adapter.write_text(json.dumps(config, indent=2), encoding="utf-8")
        folders = {base_repo: staging / "base", repo_id: main}  # the base first: the adapter needs it
    return folders


def push_to_hub(
    model_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    license: str = "apache-2.0",
    dataset_title: str | None = None,
    commit_message: str = "Upload model trained with finetune",
) -> list[str]:
    """Uploads a trained model (or LoRA adapter and its base) with its card, metrics and pictures.

    The local run directory is only read (the model card is written into `model_dir` first, atomically);
    a failed upload leaves it as it was and can simply be retried.

    Args:
        model_dir: `OUTPUT_DIR/best` of a run.
        repo_id: `user/name` on the Hub; created if missing.
        private: Create the repository as private.
        revision: Branch to upload to (created from main if missing); None: main.
        token: None: `HF_TOKEN` or the `hf auth login` token.
        license: License in the model card's metadata.
        dataset_title: A proper name for the training data in the card; None: the run's
            `dataset_title`, else its `dataset_name`, else the train file's name.
        commit_message: The commit's message.

    Returns:
        The URL of each commit made.
    """
    from huggingface_hub import HfApi

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").exists() and not (model_dir / "adapter_config.json").exists():
        raise FileNotFoundError(f"{model_dir}: no config.json or adapter_config.json; give a run's best/ directory")
    write_model_card(model_dir, repo_id, license, dataset_title)
    api = HfApi(token=token)
    commits = []
    with tempfile.TemporaryDirectory(prefix="finetune-push-") as tmp:
        for repo, folder in _stage(model_dir, repo_id, Path(tmp)).items():
            step = f"{repo} ({revision or 'main'})"
            try:
                api.create_repo(repo, private=private, exist_ok=True)
                if revision:
                    api.create_branch(repo, branch=revision, exist_ok=True)
                info = api.upload_folder(
                    repo_id=repo, folder_path=folder, revision=revision, commit_message=commit_message
                )
            except Exception as error:  # the client's errors vary (HTTP, network, auth); say which step failed
                raise RuntimeError(
                    f"upload to {step} failed: {error}; {model_dir} is unchanged, run push again"
                ) from error
            logger.info("pushed %s to %s", folder.name if repo != repo_id else model_dir, info.commit_url)
            commits.append(info.commit_url)
    return commits
