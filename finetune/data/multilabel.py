"""Multi-label classification: label sets, their stratified split, decision thresholds and metrics.

A text may carry any number of labels (none included). The model scores each label on its own
(sigmoid of its logit, `config.problem_type == "multi_label_classification"`: BERT's binary
cross-entropy) and a label is predicted where its score reaches its threshold. The thresholds are
tuned on the validation split after training and saved in the model's `config.json` as
`label_thresholds` (label name -> threshold), so that every reader of the model (`finetune predict`,
`finetune evaluate`, a Hub user with only transformers) draws the same line.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "MULTI_LABEL",
    "PROBLEM_TYPES",
    "SINGLE_LABEL",
    "THRESHOLD_STRATEGIES",
    "config_thresholds",
    "f1_from_counts",
    "f1_score",
    "is_multi_label",
    "iterative_stratification",
    "multi_hot",
    "multilabel_metrics",
    "predicted_label_sets",
    "tune_thresholds",
]

SINGLE_LABEL, MULTI_LABEL = "single_label_classification", "multi_label_classification"
PROBLEM_TYPES = (SINGLE_LABEL, MULTI_LABEL)  # transformers' names (config.problem_type); regression is not ours
THRESHOLD_STRATEGIES = ("global", "per_label")
DEFAULT_THRESHOLD = 0.5  # before tuning (during training): the sigmoid's even odds
# A label's own threshold (`per_label`) needs this many validation positives; rarer labels keep the global
# one: on fewer rows its F1 curve is a handful of texts, and a threshold fitted to them follows them.
MIN_LABEL_POSITIVES = 20
# Candidate thresholds: fine enough that F1 is flat between neighbours, coarse enough to tune in milliseconds.
CANDIDATES = np.round(np.arange(0.05, 0.951, 0.01), 2)


def is_multi_label(config) -> bool:
    """Whether a model config (or anything with `problem_type`) is a multi-label classifier."""
    return getattr(config, "problem_type", None) == MULTI_LABEL


def multi_hot(label_sets: list, num_labels: int) -> np.ndarray:
    """Label-id sets -> a (rows, num_labels) float32 matrix of 0/1, as BCE-with-logits takes its targets."""
    matrix = np.zeros((len(label_sets), num_labels), dtype=np.float32)
    for row, ids in enumerate(label_sets):
        matrix[row, list(ids)] = 1.0
    return matrix


def iterative_stratification(label_sets: list, fractions: list[float], seed: int) -> np.ndarray:
    """Assign rows to subsets so that each label's rows are shared as `fractions` say, as far as
    rows carrying several labels allow: iterative stratification (Sechidis, Tsoumakas and Vlahavas
    2011, "On the Stratification of Multi-label Data", Algorithm 1).

    The label with the fewest rows still unassigned goes first (rare labels are placed while every
    subset still wants them); each of its rows goes to the subset that wants that label most, ties
    broken by the subset that wants most rows, then at random. Rows without labels fill the
    subsets' remaining wants at the end.

    Args:
        label_sets: Each row's label ids (any hashables).
        fractions: The subsets' shares of the rows, summing to 1.
        seed: Seed of the tie-breaks and of the order of rows within a label.

    Returns:
        Each row's subset index.
    """
    rng = np.random.default_rng(seed)
    fractions = np.asarray(fractions, dtype=float)
    rows_by_label: dict = {}
    for row, labels in enumerate(label_sets):
        for label in labels:
            rows_by_label.setdefault(label, []).append(row)
    want_rows = fractions * len(label_sets)
    want = {label: fractions * len(rows) for label, rows in rows_by_label.items()}
    assigned = np.full(len(label_sets), -1, dtype=np.int64)
    remaining = {label: set(rows) for label, rows in rows_by_label.items()}
    while any(remaining.values()):
        fewest = min(len(rows) for rows in remaining.values() if rows)
        candidates = sorted((label for label, rows in remaining.items() if len(rows) == fewest), key=repr)
        label = candidates[rng.integers(len(candidates))]
        for row in rng.permutation(sorted(remaining[label])).tolist():
            subset = _most_wanting(want[label], want_rows, rng)
            assigned[row] = subset
            want_rows[subset] -= 1
            for other in label_sets[row]:
                want[other][subset] -= 1
                remaining[other].discard(row)
    for row in rng.permutation(np.flatnonzero(assigned < 0)).tolist():  # rows without labels
        subset = _most_wanting(want_rows, want_rows, rng)
        assigned[row], want_rows[subset] = subset, want_rows[subset] - 1
    return assigned


def _most_wanting(wants: np.ndarray, want_rows: np.ndarray, rng: np.random.Generator) -> int:
    """The subset with the largest want; ties: the largest want of rows, then at random."""
    best = np.flatnonzero(wants == wants.max())
    if len(best) > 1:
        best = best[want_rows[best] == want_rows[best].max()]
    return int(best[rng.integers(len(best))])


def predicted_label_sets(probabilities: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """The 0/1 predictions: a label where its score reaches its threshold."""
    return (probabilities >= np.asarray(thresholds)[None, :]).astype(np.int64)


def _f1_counts(predictions: np.ndarray, references: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, false positives and false negatives per label (over rows)."""
    predictions, references = predictions.astype(bool), references.astype(bool)
    return (
        (predictions & references).sum(0),
        (predictions & ~references).sum(0),
        (~predictions & references).sum(0),
    )


def f1_from_counts(tp, fp, fn) -> np.ndarray:
    """F1 = 2tp / (2tp + fp + fn), 0 where a label is neither predicted nor present (sklearn's zero_division=0)."""
    tp, fp, fn = (np.asarray(x, dtype=float) for x in (tp, fp, fn))
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(denominator), where=denominator > 0)


def tune_thresholds(
    probabilities: np.ndarray, references: np.ndarray, strategy: str, metric: str, min_positives=MIN_LABEL_POSITIVES
) -> np.ndarray:
    """Decision thresholds that maximise F1 on labelled scores (the validation split's).

    Args:
        probabilities: (rows, labels) sigmoid scores.
        references: (rows, labels) 0/1 truth.
        strategy: "global": one threshold for all labels, maximising `metric`; "per_label": each
            label with `min_positives` positives or more its own (the one maximising its F1), the
            others the global one; kept only where that scores `metric` at least as high as the global
            threshold does, else the global one.
        metric: "micro_f1" or "macro_f1" (other metrics: micro-F1).
        min_positives: The validation positives a label needs for a threshold of its own.

    Returns:
        One threshold per label; of equal F1, the threshold closest to 0.5. 0.5 is a candidate, so
        the tuned thresholds never score `metric` below 0.5 on these rows.
    """
    references = references.astype(bool)
    # Candidates ordered by distance from 0.5: argmax keeps the first of equal scores.
    candidates = CANDIDATES[np.argsort(np.abs(CANDIDATES - DEFAULT_THRESHOLD), kind="stable")]
    counts = np.stack([np.stack(_f1_counts(probabilities >= c, references)) for c in candidates])  # (c, 3, labels)
    macro = metric == "macro_f1"
    label_f1 = f1_from_counts(counts[:, 0], counts[:, 1], counts[:, 2])  # (c, labels)
    totals = counts.sum(-1)
    scores = label_f1.mean(-1) if macro else f1_from_counts(totals[:, 0], totals[:, 1], totals[:, 2])
    chosen = np.full(references.shape[1], candidates[int(scores.argmax())], dtype=np.float64)
    if strategy != "per_label":
        return chosen
    enough = references.sum(0) >= min_positives
    per_label = np.where(enough, candidates[label_f1.argmax(0)], chosen)
    average = "macro" if macro else "micro"
    tuned, shared = (f1_score(probabilities >= t, references, average) for t in (per_label, chosen))
    return per_label if tuned >= shared else chosen


def f1_score(predictions, references, average: str = "micro") -> float:
    """Micro-F1 (counts summed over labels) or macro-F1 (mean of the labels' F1, 0 for a label neither
    predicted nor present) of (rows, labels) 0/1 predictions, as `multilabel_metrics` computes them."""
    tp, fp, fn = _f1_counts(np.asarray(predictions), np.asarray(references))
    if average == "micro":
        return float(f1_from_counts(tp.sum(), fp.sum(), fn.sum()))
    return float(f1_from_counts(tp, fp, fn).mean())


def config_thresholds(config) -> np.ndarray:
    """The thresholds `config.label_thresholds` holds, in label-id order (0.5 for a label it lacks)."""
    saved = getattr(config, "label_thresholds", None) or {}
    return np.asarray([float(saved.get(config.id2label[i], DEFAULT_THRESHOLD)) for i in range(len(config.id2label))])


def multilabel_metrics(predictions, references, id2label: dict[int, str], prefix: str = "") -> dict:
    """Multi-label metrics under `prefix`, keyed as `classification_metrics` keys single-label ones.

    Args:
        predictions: (rows, labels) 0/1 predictions.
        references: (rows, labels) 0/1 truth.
        id2label: Label names by id.
        prefix: Key prefix such as `"test_"`.

    Returns:
        `{prefix}micro_f1`, `macro_f1` (mean of the labels' F1), `weighted_f1` (by support),
        `exact_match` (rows whose whole label set is right), `accuracy` (the same number: scikit-learn's
        accuracy of multi-label data, so that tables of single-label runs read it too),
        `hamming_accuracy` (label decisions right), `per_class` (label -> precision, recall, f1,
        support, predicted) and `num_examples`.
    """
    predictions, references = np.asarray(predictions).astype(bool), np.asarray(references).astype(bool)
    tp, fp, fn = _f1_counts(predictions, references)
    f1 = f1_from_counts(tp, fp, fn)
    support = references.sum(0)
    precision = np.divide(tp, tp + fp, out=np.zeros(len(tp)), where=(tp + fp) > 0)
    recall = np.divide(tp, support, out=np.zeros(len(tp)), where=support > 0)
    exact = float((predictions == references).all(1).mean()) if len(references) else 0.0
    per_class = {
        id2label[i]: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
            "predicted": int(tp[i] + fp[i]),
        }
        for i in range(len(id2label))
    }
    return {
        f"{prefix}micro_f1": float(f1_from_counts(tp.sum(), fp.sum(), fn.sum())),
        f"{prefix}macro_f1": float(f1.mean()),
        f"{prefix}weighted_f1": float((f1 * support).sum() / max(support.sum(), 1)),
        f"{prefix}exact_match": exact,
        f"{prefix}accuracy": exact,
        f"{prefix}hamming_accuracy": float((predictions == references).mean()) if len(references) else 0.0,
        f"{prefix}per_class": per_class,
        f"{prefix}num_examples": len(references),
    }
