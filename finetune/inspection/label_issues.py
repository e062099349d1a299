"""Likely label errors: each row's label probabilities from a model that never saw it (K-fold
cross-validation of a cheap baseline), or from a given model, ranked by cleanlab's confident learning.

    probabilities = out_of_fold_probabilities(texts, labels, folds=5, seed=42)
    issues = rank_label_issues(labels, probabilities)   # row indices, most likely wrong first

cleanlab (Northcutt et al. 2021, "Confident Learning") estimates how often each given label stands
for each true one, and flags the rows whose out-of-sample probability of their own label falls
below what that class's rows get (`find_label_issues`, pruning by noise rate), ranked by the
probability of the given label (self-confidence): lowest first.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)


def out_of_fold_probabilities(
    texts: Sequence[str], labels: Sequence, folds: int = 5, seed: int = 42, baseline: str = "tfidf_lr"
) -> np.ndarray:
    """Each row's label probabilities from `baseline` (`finetune.evaluation.baselines`) trained on the
    other folds: stratified folds for single-label ids, plain ones for multi-hot rows. Its
    hyper-parameter (TF-IDF's C) is picked once, on the first fold's training part (a tenth held out)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    from finetune.evaluation.baselines import make_baseline

    multi_label = np.ndim(labels[0]) == 1
    labels = np.asarray(labels)
    if folds < 2:
        raise ValueError(f"--folds {folds}: at least 2")
    splitter = (KFold if multi_label else StratifiedKFold)(n_splits=folds, shuffle=True, random_state=seed)
    texts = list(texts)
    width = labels.shape[1] if multi_label else int(labels.max()) + 1
    probabilities = np.zeros((len(texts), width), dtype=np.float64)
    chosen = None
    for number, (train, held_out) in enumerate(splitter.split(texts, None if multi_label else labels), start=1):
        model = make_baseline(baseline, seed)
        if chosen is not None and hasattr(model, "c_grid"):
            model.c_grid = (chosen,)
        rng = np.random.default_rng(seed + number)
        inner = rng.permutation(train)
        dev, fit = inner[: max(1, len(inner) // 10)], inner[max(1, len(inner) // 10) :]
        model.fit([texts[i] for i in fit], labels[fit], [texts[i] for i in dev], labels[dev])
        chosen = getattr(model, "selection", {}).get("C", chosen)
        probabilities[held_out] = model.predict_proba([texts[i] for i in held_out])
        logger.info("out-of-fold probabilities: fold %d of %d (%d rows)", number, folds, len(held_out))
    return probabilities


def _label_lists(labels: Sequence) -> list[list[int]]:
    """Multi-hot rows as the lists of label ids cleanlab's multi-label functions take."""
    return [list(np.flatnonzero(np.asarray(row) > 0.5)) for row in labels]


def rank_label_issues(labels: Sequence, probabilities: np.ndarray) -> np.ndarray:
    """The rows cleanlab flags as likely mislabelled, by self-confidence (the probability of the given
    label), lowest first. Multi-hot rows: a row is flagged when any of its labels looks wrong."""
    if np.ndim(labels[0]) == 1:
        from cleanlab.multilabel_classification.filter import find_label_issues

        return np.asarray(
            find_label_issues(_label_lists(labels), probabilities, return_indices_ranked_by="self_confidence")
        )
    from cleanlab.filter import find_label_issues

    labels = np.asarray(labels, dtype=np.int64)
    return np.asarray(find_label_issues(labels, probabilities, return_indices_ranked_by="self_confidence"))


def per_label_issues(labels: Sequence, probabilities: np.ndarray) -> list[np.ndarray]:
    """Multi-hot rows: for each label, the rows whose mark for that label (there or not) looks wrong."""
    from cleanlab.multilabel_classification.filter import find_multilabel_issues_per_class

    masks = np.asarray(find_multilabel_issues_per_class(_label_lists(labels), probabilities))  # (rows, labels)
    return [np.flatnonzero(masks[:, k]) for k in range(masks.shape[1])]


def self_confidence(labels: Sequence, probabilities: np.ndarray) -> np.ndarray:
    """The probability each row's model gives its given label (multi-hot: the least likely of the row's
    marks, present or absent)."""
    if np.ndim(labels[0]) == 1:
        marks = np.asarray(labels) > 0.5
        return np.where(marks, probabilities, 1 - probabilities).min(axis=1)
    return probabilities[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)]
