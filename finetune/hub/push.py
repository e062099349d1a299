"""Share a trained model: an upload to the Hugging Face Hub with the model card (`finetune.hub.model_card`).

    finetune push runs/reviews --repo-id user/reviews-sentiment [--private] [--revision v1]
        [--dataset_title "ChnSentiCorp 酒店评论"]

uploads the model saved in the run directory (model or LoRA adapter, tokenizer, the model's code, the model
card, and `onnx/` when `finetune export` wrote it there) with the run's `metrics.json`, `config.yaml` and
pictures; never its checkpoints, lock, temporary files, trackers' logs, evaluations or test predictions (a run
directory of the earlier layout: its `best/`, with the same run files). A LoRA adapter
points at its base model: the base (`base/`) goes to `<repo-id>-base` and the adapter's
`base_model_name_or_path` is set to that repository in the uploaded copy. The token comes from
`HF_TOKEN` or `hf auth login`; it is never written to a file or a log.
"""

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import yaml

from finetune.errors import FinetuneError
from finetune.files import saved_model_files
from finetune.hub.model_card import model_card, write_model_card
from finetune.model_files import resolve_model_directory, run_directory_of

__all__ = ["model_card", "push_to_hub", "write_model_card"]

logger = logging.getLogger(__name__)


class HubError(FinetuneError):
    """An upload to the Hub failed (network, token, permissions); the message says which step, and how to retry."""


RUN_FILES = (
    "metrics.json", "training_curves.png", "confusion_matrix.png", "label_scores.png", "attention.html", "config.yaml"
)  # fmt: skip
# Beside the model's own files (`files.saved_model_files`): its card, its export, the thresholds' config.json
MODEL_EXTRAS = ("README.md", "onnx", "config.json")
# Never uploaded from a directory with no record of its model's files (a copy, an earlier layout's best/): a run's
# checkpoints, temporary and hidden files (the lock), trackers' logs, evaluations, test predictions, LoRA's base
# (its own repository) and merged model
NOT_UPLOADED = re.compile(
    r"\..*|checkpoint-\d+|checkpoints|best|base|merged|runs|evaluation|test_predictions\.csv|finished\.json"
)


def _model_entries(model_dir: Path) -> list[str]:
    """The names in `model_dir` that go to the Hub with the model."""
    recorded = saved_model_files(model_dir)
    if recorded:
        wanted = {*recorded, *MODEL_EXTRAS}
        return sorted(name for name in os.listdir(model_dir) if name in wanted)
    return sorted(name for name in os.listdir(model_dir) if not NOT_UPLOADED.fullmatch(name))


def _local_paths(value, found: set) -> None:
    """Collects the absolute paths among the strings of a JSON/YAML value."""
    if isinstance(value, dict):
        for item in value.values():
            _local_paths(item, found)
    elif isinstance(value, list):
        for item in value:
            _local_paths(item, found)
    elif isinstance(value, str) and os.path.isabs(value) and "\n" not in value:
        found.add(value)


def _portable(path: str, run_dir: Path) -> str:
    """A path as the uploaded files name it: relative to the run where it is inside it, else its file name."""
    try:
        return Path(path).resolve().relative_to(run_dir.resolve()).as_posix()
    except ValueError:
        return Path(path).name


def _without_local_paths(folder: Path, run_dir: Path) -> None:
    """Rewrites the run's files in the staged `folder` (metrics.json, config.yaml, the card) so that they name
    files relative to the run, or by their names, never by this machine's paths (the data files, the
    word-vector cache, the run directory itself)."""
    found: set[str] = set()
    for name in ("metrics.json", "config.yaml"):
        if (folder / name).exists():
            _local_paths(yaml.safe_load((folder / name).read_text(encoding="utf-8")), found)
    found.add(str(run_dir.resolve()))
    found.add(str(run_dir.absolute()))
    replacements = sorted(((path, _portable(path, run_dir) or ".") for path in found), key=lambda p: -len(p[0]))
    for name in ("metrics.json", "config.yaml", "README.md"):
        path = folder / name
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        for local, portable in replacements:
            text = text.replace(json.dumps(local)[1:-1], portable).replace(local, portable)
        path.write_text(text, encoding="utf-8")


def _stage(model_dir: Path, repo_id: str, staging: Path) -> dict[str, Path]:
    """Copies what goes to the Hub into `staging` (this machine's paths taken out); returns {repo id: folder}
    (the adapter's base too)."""
    run_dir = run_directory_of(model_dir)
    main = staging / "model"
    main.mkdir()
    for name in _model_entries(model_dir):
        if (model_dir / name).is_dir():
            shutil.copytree(model_dir / name, main / name)
        else:
            shutil.copy2(model_dir / name, main / name)
    for name in RUN_FILES:
        if (run_dir / name).exists():
            shutil.copy2(run_dir / name, main / name)
    _without_local_paths(main, run_dir)
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
        model_dir: A run directory (OUTPUT_DIR; one of the earlier layout: its `best/`), or a model directory.
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

    model_dir = Path(resolve_model_directory(model_dir))
    if not (model_dir / "config.json").exists() and not (model_dir / "adapter_config.json").exists():
        raise FileNotFoundError(f"{model_dir}: no config.json or adapter_config.json; give a run's OUTPUT_DIR")
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
                reason = " ".join(str(error).split())[:300] or type(error).__name__
                raise HubError(
                    f"upload to {step} failed: {reason}; {model_dir} is unchanged: check the network and the token "
                    f"(HF_TOKEN or `hf auth login`), then run `finetune push {model_dir} --repo-id {repo_id}` again"
                ) from error
            logger.info("pushed %s to %s", folder.name if repo != repo_id else model_dir, info.commit_url)
            commits.append(info.commit_url)
    return commits
