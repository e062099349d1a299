"""Comparing classifiers over seeds and test texts: mean and spread, the paired bootstrap interval,
and the seed spread a run's `metrics.json` and model card carry.

A method's runs are a correctness array: one row per seed, one column per test text (1: right).
Two methods are compared on the same test texts, so their difference is paired: resampling the
texts resamples both methods' answers on each text together, and the seeds of each method are
resampled too, so the interval holds the seed-to-seed spread as well as the choice of test texts.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mean_and_std", "paired_bootstrap_interval", "seed_spread"]


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
