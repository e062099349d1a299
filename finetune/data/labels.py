"""What the labels are: one per text or a set (the problem type), checked across the splits, and
numbered for the classifier (label2id / id2label, or the names `--label_names` gives).

Separate from `finetune.data.loading`, which reads and splits the rows, because every split's labels pass
through these rules before any number reaches the model, and each rule has its own error message.
"""

from __future__ import annotations

from collections.abc import Iterable

import datasets

from finetune.data.cleaning import shorten, whole_numbers
from finetune.data.multilabel import MULTI_LABEL, SINGLE_LABEL
from finetune.data.tables import DataError


def resolve_problem_type(read: dict, problem_type: str | None) -> tuple[dict, str]:
    """Every split's labels in the problem's form, and the problem type: multi-label where asked for,
    or (`problem_type` None) where the training labels are lists; lists of labels (`SplitRows.rows`)
    for multi-label, single labels for single-label.

    Args:
        read: `SplitRows` by split, as `finetune.data.sources` reads them.
        problem_type: `MULTI_LABEL`, `SINGLE_LABEL`, or None.

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


def check_split_labels(splits: dict, sources: dict, locators: dict, multi_label: bool) -> None:
    """Check that train has two labels or more (multi-label: over all its rows) and that other files use only
    those.

    Args:
        splits: Cleaned rows by split, with the "_row" column `locators` read.
        sources: The file (or dataset split) of each split, for messages.
        locators: By split, a function giving a row's place in its file ("line N" or "row N").
        multi_label: Whether each label is a list of labels.

    Raises:
        DataError: Train's labels look like texts or are fewer than two, or another split has a label
            train lacks (its file and row named).
    """

    def each_label(label) -> list:
        return label if multi_label else [label]

    labels = splits["train"]["label"][:]
    train_labels = {each for label in labels for each in each_label(label)}
    # A column of texts given as the labels: a class per row, nothing a classifier can learn.
    if not multi_label and len(labels) >= 20 and len(train_labels) > len(labels) / 2:
        raise DataError(
            f"{sources['train']}: {len(train_labels):,} distinct labels in {len(labels):,} rows (e.g. "
            f"{', '.join(repr(shorten(str(label))) for label in list(train_labels)[:3])}): is this the label "
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
    numbers = whole_numbers(distinct)
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


def number_labels(labels: list, label_order: list | None, label_names: list[str] | None, source: str):
    """label2id, id2label and each label value's id: from `label_names`, else `label_maps`.

    Args:
        labels: The training labels (multi-label: every row's, flattened).
        label_order: A ClassLabel's names, the order `label_maps` numbers in; None: sorted.
        label_names: `--label_names`, names of the integer labels 0..K-1; None: the labels themselves.
        source: What the labels are called in errors.
    """
    if label_names is None:
        label2id, id2label = label_maps(labels, order=label_order)
        return label2id, id2label, {label: label2id[str(label)] for label in set(labels)}
    ids = check_label_names(labels, label_names, source)
    return {name: index for index, name in enumerate(label_names)}, dict(enumerate(label_names)), ids
