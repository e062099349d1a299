"""Comparing classifiers over seeds and test texts: mean and spread, the paired bootstrap interval,
and the seed spread a run's `metrics.json` and model card carry.

A method's runs are a correctness array: one row per seed, one column per test text (1: right).
Two methods are compared on the same test texts, so their difference is paired: resampling the
texts resamples both methods' answers on each text together, and the seeds of each method are
resampled too, so the interval holds the seed-to-seed spread as well as the choice of test texts.
"""

from __future__ import annotations

import numpy as np

from finetune.data.multilabel import f1_from_counts

__all__ = ["f1_counts", "mean_and_std", "paired_bootstrap_f1_interval", "paired_bootstrap_interval", "seed_spread"]


def mean_and_std(values) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof 1; None for a single value)."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), (float(values.std(ddof=1)) if len(values) > 1 else None)


def _seed_means(correct: np.ndarray, rng: np.random.Generator, resamples: int) -> np.ndarray:
    """Per resample and text, the mean correctness over a resample (with replacement) of the seeds."""
    seeds = len(correct)
    counts = rng.multinomial(seeds, np.full(seeds, 1 / seeds), size=resamples)  # (resamples, seeds)
    return counts @ correct / seeds


def paired_bootstrap_interval(
    correct_a, correct_b, *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0, chunk: int = 250
) -> dict:
    """The accuracy difference of method a over method b, with a bootstrap confidence interval.

    Each resample draws the test texts with replacement (the same texts for both methods) and,
    independently for each method, its seeds with replacement (the seeds of two methods are not
    paired: seed 1 of one has nothing to do with seed 1 of the other). The difference of the
    resampled mean accuracies is collected; the interval is its percentiles.

    Args:
        correct_a: Method a's correctness, (seeds, texts) or (texts,) for one run: 1/True where right.
        correct_b: Method b's, on the same texts in the same order.
        resamples: Bootstrap resamples.
        confidence: The interval's coverage (0.95: the 2.5th and 97.5th percentiles).
        seed: Seeds the resampling, so the interval is reproducible.
        chunk: Resamples computed at once (memory: chunk x texts floats).

    Returns:
        "difference" (a's mean accuracy minus b's, over all runs and texts), "low", "high",
        "resamples", "confidence".
    """
    a, b = (np.atleast_2d(np.asarray(c, dtype=float)) for c in (correct_a, correct_b))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"the methods were scored on different numbers of texts ({a.shape[1]} and {b.shape[1]})")
    rng, texts, differences = np.random.default_rng(seed), a.shape[1], []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        weights = rng.multinomial(texts, np.full(texts, 1 / texts), size=size) / texts  # (size, texts)
        per_text = _seed_means(a, rng, size) - _seed_means(b, rng, size)
        differences.append(np.einsum("rt,rt->r", weights, per_text))
    differences = np.concatenate(differences)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(differences, [tail, 100 - tail])
    return {
        "difference": float(a.mean() - b.mean()),
        "low": float(low),
        "high": float(high),
        "resamples": resamples,
        "confidence": confidence,
    }


def f1_counts(predicted, references) -> np.ndarray:
    """Multi-label predictions as (texts, labels, 3) counts of true positives, false positives and false
    negatives: what `paired_bootstrap_f1_interval` resamples. `predicted`, `references`: (texts, labels) 0/1."""
    predicted, references = np.asarray(predicted, dtype=bool), np.asarray(references, dtype=bool)
    return np.stack([predicted & references, predicted & ~references, ~predicted & references], axis=-1).astype(float)


def _f1_of_counts(counts: np.ndarray, average: str) -> np.ndarray:
    """F1 of summed (..., labels, 3) counts: micro (counts summed over labels) or macro (mean of the labels' F1,
    0 for a label neither predicted nor present)."""
    if average == "micro":
        counts = counts.sum(-2)
    f1 = f1_from_counts(counts[..., 0], counts[..., 1], counts[..., 2])
    return f1 if average == "micro" else f1.mean(-1)


def paired_bootstrap_f1_interval(
    counts_a, counts_b, average: str = "micro", *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0,
    chunk: int = 100,
) -> dict:  # fmt: skip
    """`paired_bootstrap_interval` for multi-label F1 (micro or macro), which is no mean over texts: each
    resample draws the test texts (the same for both methods) and each method's seeds, sums the drawn
    texts' counts and computes F1 from the sums.

    Args:
        counts_a: Method a's `f1_counts`, (seeds, texts, labels, 3) or (texts, labels, 3) for one run.
        counts_b: Method b's, on the same texts in the same order.
        average: "micro" or "macro".

    Returns:
        As `paired_bootstrap_interval`: "difference" (a's F1 minus b's, each over all its runs), "low",
        "high", "resamples", "confidence".
    """
    a, b = (np.asarray(c, dtype=float) for c in (counts_a, counts_b))
    a, b = (c[None] if c.ndim == 3 else c for c in (a, b))
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"the methods were scored on different texts or labels ({a.shape[1:]} and {b.shape[1:]})")
    rng, texts, differences = np.random.default_rng(seed), a.shape[1], []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        weights = rng.multinomial(texts, np.full(texts, 1 / texts), size=size)  # (size, texts)
        f1 = []
        for c in (a, b):
            per_text = _seed_means(c.reshape(len(c), -1), rng, size).reshape(size, *c.shape[1:])
            f1.append(_f1_of_counts(np.einsum("rt,rtlk->rlk", weights, per_text), average))
        differences.append(f1[0] - f1[1])
    differences = np.concatenate(differences)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(differences, [tail, 100 - tail])
    difference = _f1_of_counts(a.sum(1), average).mean() - _f1_of_counts(b.sum(1), average).mean()
    return {"difference": float(difference), "low": float(low), "high": float(high), "resamples": resamples,
            "confidence": confidence}  # fmt: skip


def seed_spread(runs: list[dict], this_seed: int) -> dict:
    """What a run's `metrics.json` keeps of its method's runs over seeds on the same data and settings.

    Args:
        runs: One dict per seed: "seed", "test_accuracy", "test_macro_f1".
        this_seed: The run being described.

    Returns:
        "seeds", "this_seed", "rank" (1: this run had the best test accuracy of all seeds; ties
        share the better place), "runs", and for "test_accuracy" and "test_macro_f1": "mean",
        "std" (ddof 1; None for one seed), "min", "max", "values" (in seed order).
    """
    runs = sorted(runs, key=lambda run: run["seed"])
    this = next(run for run in runs if run["seed"] == this_seed)
    spread = {"seeds": [run["seed"] for run in runs], "this_seed": this_seed, "runs": len(runs)}
    spread["rank"] = 1 + sum(run["test_accuracy"] > this["test_accuracy"] for run in runs)
    for key in ("test_accuracy", "test_macro_f1"):
        values = [float(run[key]) for run in runs]
        mean, std = mean_and_std(values)
        spread[key] = {"mean": mean, "std": std, "min": min(values), "max": max(values), "values": values}
    return spread
