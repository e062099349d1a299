"""Seeded, stratified cuts of labelled rows into train / validation / test splits.

Each split keeps each label's share of the rows to within one row, so small data still holds
every label.
"""

from __future__ import annotations

import math

import datasets
import numpy as np

__all__ = ["SPLITS", "stratified_split"]

SPLITS = ("train", "validation", "test")


def _rows_by_label(ds: datasets.Dataset) -> dict:
    rows_by_label: dict = {}
    for index, label in enumerate(ds["label"][:]):
        rows_by_label.setdefault(label, []).append(index)
    return rows_by_label


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
    rows_by_label = _rows_by_label(ds)
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
