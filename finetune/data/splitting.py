"""Seeded, stratified cuts of labelled rows: train / validation / test splits, and capped subsets.

Both keep each label's share of the rows to within one row, so small data and small caps still
hold every label. Multi-label rows (a list of labels each) are cut by iterative stratification
(`multilabel.iterative_stratification`): each label's share is kept as far as rows carrying several
labels allow, and every label keeps a training row.
"""

from __future__ import annotations

import math

import datasets
import numpy as np

from finetune.data.multilabel import iterative_stratification
from finetune.data.tables import DataError

__all__ = ["SPLITS", "stratified_sample", "stratified_split"]

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
    if _is_multi_label(ds):
        parts = _multilabel_parts(ds["label"][:], validation_size, test_size, seed)
    else:
        parts = _single_label_parts(_rows_by_label(ds), validation_size, test_size, rng)
    wanted = {"train": True, "validation": validation_size > 0, "test": test_size > 0}
    shuffled = {
        split: ds.select(rng.permutation(np.asarray(rows, dtype=np.int64)))
        for split, rows in parts.items()
        if wanted[split]
    }
    return datasets.DatasetDict(shuffled)


def _is_multi_label(ds: datasets.Dataset) -> bool:
    return isinstance(ds.features["label"], (datasets.List, datasets.Sequence, datasets.LargeList))


def _single_label_parts(rows_by_label: dict, validation_size: float, test_size: float, rng) -> dict[str, list[int]]:
    """Each label's rows shuffled and cut on its own."""
    parts: dict[str, list[int]] = {split: [] for split in SPLITS}
    for label in sorted(rows_by_label, key=repr):
        rows = rng.permutation(rows_by_label[label]).tolist()
        n_test = min(math.floor(len(rows) * test_size + 0.5), len(rows) - 1)
        n_validation = min(math.floor(len(rows) * validation_size + 0.5), len(rows) - 1 - n_test)
        parts["test"] += rows[:n_test]
        parts["validation"] += rows[n_test : n_test + n_validation]
        parts["train"] += rows[n_test + n_validation :]
    return parts


def _multilabel_parts(label_sets: list, validation_size: float, test_size: float, seed: int) -> dict[str, list[int]]:
    """Iterative stratification into train / validation / test; then a label left without a training
    row (one seen in a single row or two) gets one back, taken from the split holding most of its rows."""
    fractions = [1 - validation_size - test_size, validation_size, test_size]
    assigned = iterative_stratification(label_sets, fractions, seed)
    for label in sorted({label for labels in label_sets for label in labels}, key=repr):
        rows = [row for row, labels in enumerate(label_sets) if label in labels]
        if not any(assigned[row] == 0 for row in rows):
            assigned[min(rows, key=lambda row: len(label_sets[row]))] = 0
    return {split: np.flatnonzero(assigned == index).tolist() for index, split in enumerate(SPLITS)}


def stratified_sample(ds: datasets.Dataset, n: int, *, seed: int, name: str) -> datasets.Dataset:
    """At most `n` rows, seeded and stratified: each label keeps its share (to within one row) and
    at least one row, so a small cap still holds every label.

    Args:
        ds: Rows with a "label" column.
        n: How many rows to keep; all of them, in their order, if `n` >= their number.
        seed: Seed of the choice; the same seed gives the same rows.
        name: The rows and the cap, for errors, e.g. "reviews.csv (validation split): --max_eval_samples 1".

    Returns:
        The chosen rows in shuffled order.

    Raises:
        DataError: `n` is below the number of labels.
    """
    if n >= ds.num_rows:
        return ds
    if _is_multi_label(ds):
        return _multilabel_sample(ds, n, seed=seed, name=name)
    rows_by_label = _rows_by_label(ds)
    if n < len(rows_by_label):
        labels = len(rows_by_label)
        raise DataError(
            f"{name} is fewer than the {labels} labels; give {labels} or more so that each label keeps a row"
        )
    shares = {label: n * len(rows) / ds.num_rows for label, rows in rows_by_label.items()}
    take = {label: max(1, math.floor(share)) for label, share in shares.items()}
    while sum(take.values()) > n:  # labels raised to one row push the total over: take from the most over
        label = max((label for label in take if take[label] > 1), key=lambda label: take[label] - shares[label])
        take[label] -= 1
    while sum(take.values()) < n:  # the largest remainders get the rows left
        label = max(
            (label for label in take if take[label] < len(rows_by_label[label])),
            key=lambda label: shares[label] - take[label],
        )
        take[label] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(rows_by_label[label])[: take[label]] for label in sorted(rows_by_label, key=repr)]
    return ds.select(rng.permutation(np.concatenate(chosen)).astype(np.int64))


def _multilabel_sample(ds: datasets.Dataset, n: int, *, seed: int, name: str) -> datasets.Dataset:
    """`stratified_sample` of multi-label rows: first a row for each label (rarest labels first, the
    row with fewest labels), then iterative stratification of the rest into the rows still wanted,
    topped up or trimmed to exactly `n` at random."""
    label_sets = ds["label"][:]
    rows_by_label: dict = {}
    for row, labels in enumerate(label_sets):
        for label in labels:
            rows_by_label.setdefault(label, []).append(row)
    if n < len(rows_by_label):
        raise DataError(
            f"{name} is fewer than the {len(rows_by_label)} labels; give {len(rows_by_label)} or more so that "
            "each label can keep a row"
        )
    kept, covered = [], set()
    for label in sorted(rows_by_label, key=lambda label: (len(rows_by_label[label]), repr(label))):
        if label not in covered:
            kept.append(min(rows_by_label[label], key=lambda row: len(label_sets[row])))
            covered.update(label_sets[kept[-1]])
    rng = np.random.default_rng(seed)
    rest = np.setdiff1d(np.arange(ds.num_rows), kept)
    wanted = min(n - len(kept), len(rest))
    if wanted:
        share = wanted / len(rest)
        assigned = iterative_stratification([label_sets[row] for row in rest], [share, 1 - share], seed)
        chosen = rest[assigned == 0]
        if len(chosen) > wanted:
            chosen = rng.choice(chosen, wanted, replace=False)
        elif len(chosen) < wanted:
            chosen = np.concatenate(
                [chosen, rng.choice(np.setdiff1d(rest, chosen), wanted - len(chosen), replace=False)]
            )
        kept = np.concatenate([kept, chosen])
    return ds.select(rng.permutation(np.asarray(kept, dtype=np.int64)))
