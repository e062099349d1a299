"""Score a saved model on a labelled file, as a training run scores its test split.

    finetune evaluate runs/reviews test.csv

The file is read and cleaned as `load_data` reads a `--test_file` (`read_labelled_file`), encoded
as the builders encode a run's splits, batched by `eval_dataloader` and scored by `predict` and
`classification_metrics`: on a run's own test file the numbers are the run's `test_*` metrics.
Into the output directory go `metrics.json` (keys as a run names its test metrics, plus the model
and file evaluated), `per_class.csv` and `confusion_matrix.png`, each written atomically.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import datasets

from finetune.data.features import add_ngram_columns, encode_splits, encode_texts, eval_dataloader, segment_splits
from finetune.data.loading import load_data, read_labelled_file
from finetune.data.multilabel import is_multi_label, multi_hot
from finetune.data.tables import DataError
from finetune.devices import create_accelerator, run_hardware
from finetune.errors import ArgumentError
from finetune.evaluation.metrics import evaluate_split
from finetune.evaluation.reports import LABEL_SCORES, plot_confusion_matrix, plot_label_scores
from finetune.files import atomic_write, write_json_atomic
from finetune.inference.classifier import load_classifier
from finetune.model_files import check_model_directory, resolve_model_directory, run_directory_of
from finetune.models.bilstm_attention.long_text import LongText

logger = logging.getLogger(__name__)

PREFIX = "test_"
METRICS_FILE, PER_CLASS_FILE, CONFUSION_FILE = "metrics.json", "per_class.csv", "confusion_matrix.png"
PER_CLASS_COLUMNS = ("precision", "recall", "f1", "support")
# In the run directory, beside its model: a run directory lists it among its own entries (`run_directory.RUN_ENTRIES`).
EVALUATION_DIR = "evaluation"


def encode_for_model(dataset: datasets.Dataset, tokenizer, config, name: str = "test") -> datasets.Dataset:
    """`text` -> `input_ids`, `attention_mask`, `length`, as the builders encode a run's evaluation
    splits: cut, or the tokens the windows cover, as the model's `config` says (`LongText`).

    A `JiebaTokenizer` segments and then encodes (`build_word_vector_model`), with the n-gram features
    of a TF-IDF branch where the model has one; a Hugging Face tokenizer (BERT's, the biLM's) encodes
    the texts itself (`encode_texts`).
    """
    splits = datasets.DatasetDict({name: dataset})
    settings = LongText.of(config)
    if not hasattr(tokenizer, "segment"):
        return encode_texts(splits, tokenizer, settings.max_length, long_text=settings)[name]
    encoded = encode_splits(segment_splits(splits, tokenizer), tokenizer, settings.max_length, settings)[name]
    return add_ngram_columns(encoded, tokenizer) if getattr(tokenizer, "tfidf", None) is not None else encoded


def evaluate_dataset(
    model, tokenizer, dataset: datasets.Dataset, accelerator, *, batch_size: int = 256, prefix: str = PREFIX
) -> dict:
    """Metrics of `model` on one split, with the recipe's batching and gathering.

    Args:
        model: The classifier, on the accelerator's device (prepared or not).
        tokenizer: Its tokenizer (pads the batches; encodes `dataset` if needed).
        dataset: Label ids in "label", and either the model inputs of a builder's encoded split
            ("input_ids", "attention_mask", "length") or "text", then encoded here with
            `encode_for_model`, cut (or windowed: metrics per text) as the model's config says.
        accelerator: The run's accelerator; several processes share the examples.
        batch_size: Examples per batch and process.
        prefix: Key prefix of the metrics.

    Returns:
        `{prefix}accuracy`, `macro_f1`, `weighted_f1`, `per_class`, `confusion_matrix`,
        `num_examples`, `loss` and `samples_per_second` (of the prediction alone).
    """
    config = accelerator.unwrap_model(model).config
    if "input_ids" not in dataset.column_names:
        dataset = encode_for_model(dataset, tokenizer, config, name=prefix.rstrip("_") or "test")
    loader, _ = eval_dataloader(dataset, tokenizer, batch_size)
    loader = accelerator.prepare(loader)
    start = time.perf_counter()
    metrics = evaluate_split(model, loader, accelerator, prefix)
    metrics[f"{prefix}samples_per_second"] = len(dataset) / (time.perf_counter() - start)
    return metrics


def label_ids(
    labels: list, rows: list[int], label2id: dict[str, int], source: str, locate: Callable[[int], str], model: str
) -> list[int]:
    """The model's id of each label; a label the model does not know is an error.

    Labels match by `str(label)`, the form a config's `label2id` holds, so a file of ints 0/1 fits a
    model whose labels are "0"/"1" (a run on such a file saved them so), and the converse.

    Raises:
        DataError: Naming the file, each unknown label with the first line holding it (up to 5),
            and the labels the model knows.
    """
    unknown: dict = {}
    for label, row in zip(labels, rows, strict=True):
        if str(label) not in label2id:
            unknown.setdefault(str(label), row)
    if unknown:
        examples = ", ".join(f"{label!r} ({locate(row)})" for label, row in list(unknown.items())[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        known = ", ".join(map(repr, sorted(label2id, key=label2id.get)))
        raise DataError(
            f"{source}: label{'s' if len(unknown) > 1 else ''} the model does not know: {examples}{more}; "
            f"{model} knows {known}"
        )
    return [label2id[str(label)] for label in labels]


def label_vectors(
    labels: list, rows: list[int], label2id: dict[str, int], source: str, locate: Callable[[int], str], model: str
) -> list[list[float]]:
    """A multi-label model's multi-hot vector of each row's labels (a list, or one label); a label the
    model does not know is an error, as in `label_ids`."""
    sets = [label if isinstance(label, list) else [label] for label in labels]
    flat = [(label, row) for labels_of_row, row in zip(sets, rows, strict=True) for label in labels_of_row]
    ids = iter(label_ids([label for label, _ in flat], [row for _, row in flat], label2id, source, locate, model))
    return multi_hot([[next(ids) for _ in labels_of_row] for labels_of_row in sets], len(label2id)).tolist()


def default_output_dir(model_dir: str | os.PathLike, file: str | os.PathLike) -> Path:
    """`evaluation/<file's stem>` in the model's run directory (runs/reviews, test.csv -> runs/reviews/evaluation/test;
    an earlier layout's runs/reviews/best too), or under the current directory for a Hub id."""
    model = Path(os.path.abspath(model_dir))
    base = run_directory_of(model) if model.exists() else Path.cwd()
    return base / EVALUATION_DIR / Path(os.path.abspath(file)).stem


def _check_output_dir(output_dir: Path) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise ArgumentError(f"--output_dir {output_dir}: is a file, not a directory")


def write_per_class_csv(per_class: dict[str, dict], path: str | os.PathLike) -> None:
    """One row per label: precision, recall, f1, support (UTF-8 with BOM: Excel shows Chinese labels)."""
    with atomic_write(path, encoding="utf-8-sig", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["label", *PER_CLASS_COLUMNS])
        for label, row in per_class.items():
            writer.writerow([label, *(f"{row[key]:.6f}" for key in PER_CLASS_COLUMNS[:-1]), row["support"]])


def _dropped(stats: dict) -> str:
    """ "2 of 62 rows dropped in cleaning (1 empty, 1 duplicates removed)", or "" when none was."""
    kinds = ("empty_dropped", "missing_label_dropped", "duplicates_removed", "conflicting_dropped")
    parts = [f"{stats[kind]} {kind.replace('_', ' ')}" for kind in kinds if stats.get(kind)]
    if not parts:
        return ""
    return f"; {stats['rows_read'] - stats['kept']} of {stats['rows_read']} rows dropped ({', '.join(parts)})"


def markdown_summary(results: dict, prefix: str = PREFIX) -> str:
    """What was evaluated, then the headline numbers and precision/recall/F1/support per label as
    markdown tables."""
    stats = results["data"]["stats"]["test"]
    lines = [f"{results['model']} on {results['file']}{_dropped(stats)}", ""]
    headline = ("num_examples", "accuracy", "macro_f1", "weighted_f1", "loss")
    if prefix + "exact_match" in results:  # multi-label (its accuracy is the exact match)
        headline = ("num_examples", "micro_f1", "macro_f1", "exact_match", "loss")
    lines += ["| " + " | ".join(headline) + " |", "|" + "---:|" * len(headline)]
    values = [results[prefix + key] for key in headline]
    lines.append("| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in values) + " |")
    lines += ["", "| label | " + " | ".join(PER_CLASS_COLUMNS) + " |", "|---|" + "---:|" * len(PER_CLASS_COLUMNS)]
    for label, row in results[prefix + "per_class"].items():
        cells = [f"{row[key]:.4f}" for key in PER_CLASS_COLUMNS[:-1]] + [str(row["support"])]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evaluate_file(
    model_dir: str | os.PathLike,
    file: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    *,
    text_column: str = "text",
    label_column: str = "label",
    encoding: str | None = None,
    batch_size: int = 256,
    label_separator: str | None = None,
) -> dict:
    """Score a saved model on a labelled file and write `metrics.json`, `per_class.csv` and
    `confusion_matrix.png` into `output_dir`; nothing is written when the input is at fault.

    The file is cleaned as a run cleans its test file (empty texts, missing labels, duplicates and
    texts with two labels are dropped, and counted in `metrics.json` under `data`).

    Args:
        model_dir: A saved model directory (a run's OUTPUT_DIR, a LoRA adapter's included; an earlier layout's
            run directory: its `best/`) or Hub id.
        file: A labelled table (csv, tsv, json, jsonl, parquet, saved dataset).
        output_dir: Where to write; None: `default_output_dir` (runs/x -> runs/x/evaluation/FILE_STEM).
        text_column: The column holding the texts.
        label_column: The column holding the labels.
        encoding: The text file's encoding; None: UTF-8, else detected and logged.
        batch_size: Examples per batch.
        label_separator: A multi-label model's file of labels joined in strings: the character between them.

    Returns:
        What `metrics.json` holds: the `test_*` metrics of `evaluate_dataset`, "model", "file",
        "output_dir", "data" (the file's "sources" and cleaning "stats", as a run's metrics.json
        has them) and "hardware".

    Raises:
        ModelDirectoryError: The model directory is missing or damaged.
        DataError: The file is missing or unreadable, lacks a column, or holds labels the model
            does not know.
        ArgumentError: `output_dir` is a file.
    """
    model_dir = resolve_model_directory(model_dir)
    output_dir = Path(output_dir) if output_dir is not None else default_output_dir(model_dir, file)
    _check_output_dir(output_dir)
    check_model_directory(model_dir)
    rows, counts, source, locate = read_labelled_file(
        file, text_column=text_column, label_column=label_column, encoding=encoding, label_separator=label_separator
    )
    classifier = load_classifier(model_dir)
    model, tokenizer = classifier.model, classifier.tokenizer
    encode = label_vectors if is_multi_label(model.config) else label_ids
    ids = encode(rows["label"][:], rows["_row"][:], model.config.label2id, source, locate, str(model_dir))
    dataset = datasets.Dataset.from_dict({"text": rows["text"][:], "label": ids})

    accelerator = create_accelerator()
    model = accelerator.prepare_model(model, evaluation_mode=True)
    metrics = evaluate_dataset(model, tokenizer, dataset, accelerator, batch_size=batch_size)
    results = {**metrics, "model": str(model_dir), "file": str(file), "output_dir": str(output_dir)}
    results |= {"data": {"sources": {"test": source}, "stats": {"test": counts}}, "hardware": run_hardware(accelerator)}

    title = f"{Path(source).name}, {results[PREFIX + 'num_examples']} examples"
    write_evaluation(results, accelerator.unwrap_model(model).config, PREFIX, output_dir, title)
    return results


def write_evaluation(results: dict, config, prefix: str, output_dir: Path, title: str) -> None:
    """`metrics.json` (all of `results`), and the per-class table and confusion matrix of the `prefix` split."""
    labels = [config.id2label[i] for i in range(config.num_labels)]
    write_json_atomic(results, output_dir / METRICS_FILE)
    write_per_class_csv(results[prefix + "per_class"], output_dir / PER_CLASS_FILE)
    if is_multi_label(config):  # no single confusion matrix: each label's P/R/F1 at its threshold
        thresholds = getattr(config, "label_thresholds", None)
        plot_label_scores(results[prefix + "per_class"], thresholds, output_dir / LABEL_SCORES, title=title)
    else:
        plot_confusion_matrix(results[prefix + "confusion_matrix"], labels, output_dir / CONFUSION_FILE, title=title)
    logger.info("Wrote %s, %s and the picture to %s", METRICS_FILE, PER_CLASS_FILE, output_dir)


def evaluate_saved_run(args, accelerator) -> dict:
    """`--do_train false`: the run's model (in OUTPUT_DIR; an earlier layout's `best/`) scored on the run's
    data as the run scored it: the validation split with `do_eval`, the test split with `do_predict` (the
    same files, or the same seeded split of one file). Into OUTPUT_DIR/evaluation/ go `metrics.json` (`validation_*`
    and `test_*` keys, as the run's), and the per-class table and confusion matrix of the test
    split (else validation); the run's own files are left as they are.

    Args:
        args: The recipe's `RunArguments` (data, seed, output_dir, batch size, do_eval/do_predict).
        accelerator: The run's `Accelerator`.
    """
    output_dir = Path(args.training.output_dir)
    model_dir = resolve_model_directory(output_dir)
    check_model_directory(model_dir)
    splits, data_info = load_data(args.data, args.training.seed)
    classifier = load_classifier(model_dir)
    model, tokenizer = classifier.model, classifier.tokenizer
    label2id, config = model.config.label2id, model.config
    model = accelerator.prepare_model(model, evaluation_mode=True)
    wanted = {"validation": args.training.do_eval, "test": args.training.do_predict}
    results = {"model": str(model_dir), "data": data_info}
    for split in [name for name, asked in wanted.items() if asked and name in splits]:
        labels = splits[split]["label"]
        if is_multi_label(config):  # multi-hot vectors: each row's label names
            names = [[data_info["id2label"][i] for i, on in enumerate(row) if on] for row in labels]
        else:
            names = [data_info["id2label"][i] for i in labels]
        source = data_info["sources"].get(split, split)
        encode = label_vectors if is_multi_label(config) else label_ids
        ids = encode(names, list(range(len(names))), label2id, source, lambda row: f"row {row + 1}", str(model_dir))
        dataset = datasets.Dataset.from_dict({"text": splits[split]["text"][:], "label": ids})
        batch_size = args.training.per_device_eval_batch_size
        results |= evaluate_dataset(model, tokenizer, dataset, accelerator, batch_size=batch_size, prefix=f"{split}_")
        logger.info(
            "%s: accuracy %.4f, macro-F1 %.4f", split, results[f"{split}_accuracy"], results[f"{split}_macro_f1"]
        )
    shown = "test" if "test_accuracy" in results else "validation" if "validation_accuracy" in results else None
    if shown is None:
        raise ArgumentError("--do_train false: nothing to do without --do_eval or --do_predict")
    if accelerator.is_main_process:
        config = accelerator.unwrap_model(model).config
        results_with_hardware = {**results, "hardware": run_hardware(accelerator)}
        write_evaluation(results_with_hardware, config, f"{shown}_", output_dir / EVALUATION_DIR, f"{shown} split")
    accelerator.wait_for_everyone()
    accelerator.end_training()  # the process group ended before the processes exit, as a training run ends it
    return results
