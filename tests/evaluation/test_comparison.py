"""The paired bootstrap interval on synthetic correctness arrays, mean and std, and a run's seed spread."""

import numpy as np
import pytest

from finetune.evaluation.comparison import mean_and_std, paired_bootstrap_interval, seed_spread


def correctness(rng, seeds: int, texts: int, rate: float, flipped: float = 0.05) -> np.ndarray:
    """Right on `rate` of the texts; each seed then flips its own `flipped` share (seeds mostly agree)."""
    right = rng.random(texts) < rate
    return right ^ (rng.random((seeds, texts)) < flipped)


def test_identical_methods_differ_by_nothing():
    rng = np.random.default_rng(0)
    runs = correctness(rng, 5, 800, 0.85)
    interval = paired_bootstrap_interval(runs, runs, resamples=1000)
    assert interval["difference"] == 0
    # the seeds of each method are resampled apart, so the interval has some width, but little
    assert interval["low"] <= 0 <= interval["high"] and interval["high"] - interval["low"] < 0.03
    single = paired_bootstrap_interval(runs[0], runs[0], resamples=200)
    assert single["low"] == single["high"] == 0  # one run each: nothing left to vary


def test_a_method_right_on_ten_percent_more_texts_is_ahead_by_about_ten_points():
    rng = np.random.default_rng(1)
    baseline = correctness(rng, 1, 1000, 0.8, flipped=0)
    better = np.repeat(baseline, 3, axis=0)
    wrong = np.flatnonzero(~baseline[0])
    better[:, wrong[:100]] = True  # right on 100 texts more in every seed
    better[1, np.flatnonzero(baseline[0])[:5]] = False  # seeds differ a little
    interval = paired_bootstrap_interval(better, baseline, resamples=1000, seed=3)
    assert interval["difference"] == pytest.approx(0.1 - 5 / 3000)
    assert 0.07 < interval["low"] < interval["difference"] < interval["high"] < 0.12
    # the same texts for both methods: far narrower than the two accuracies' own intervals (~±2.5 points)
    assert interval["high"] - interval["low"] < 0.045
    assert paired_bootstrap_interval(better, baseline, resamples=1000, seed=3) == interval  # seeded


def test_methods_on_different_texts_are_refused():
    with pytest.raises(ValueError, match="different numbers of texts"):
        paired_bootstrap_interval(np.ones((2, 10)), np.ones((1, 11)))


def test_mean_and_sample_std():
    assert mean_and_std([0.8, 0.9]) == (pytest.approx(0.85), pytest.approx(np.std([0.8, 0.9], ddof=1)))
    assert mean_and_std([0.8]) == (0.8, None)


def test_seed_spread_ranks_the_run_among_its_seeds():
    runs = [
        {"seed": 43, "test_accuracy": 0.86, "test_macro_f1": 0.85},
        {"seed": 42, "test_accuracy": 0.84, "test_macro_f1": 0.83},
        {"seed": 44, "test_accuracy": 0.88, "test_macro_f1": 0.87},
    ]
    spread = seed_spread(runs, 43)
    assert spread["seeds"] == [42, 43, 44] and spread["this_seed"] == 43
    assert spread["rank"] == 2 and spread["runs"] == 3
    assert spread["test_accuracy"]["values"] == [0.84, 0.86, 0.88]
    assert spread["test_accuracy"]["mean"] == pytest.approx(0.86)
    assert spread["test_accuracy"]["std"] == pytest.approx(0.02)
    assert (spread["test_macro_f1"]["min"], spread["test_macro_f1"]["max"]) == (0.83, 0.87)


def test_f1_interval_of_identical_and_of_better_multilabel_predictions():
    from sklearn.metrics import f1_score

    from finetune.evaluation.comparison import f1_counts, paired_bootstrap_f1_interval

    rng = np.random.default_rng(2)
    truth = rng.random((600, 4)) < [0.5, 0.3, 0.1, 0.05]
    noisy = truth ^ (rng.random((3, 600, 4)) < 0.15)  # 3 seeds, 15% of decisions wrong
    cleaner = truth ^ (rng.random((3, 600, 4)) < 0.05)
    counts_noisy = np.stack([f1_counts(p, truth) for p in noisy])
    counts_clean = np.stack([f1_counts(p, truth) for p in cleaner])
    same = paired_bootstrap_f1_interval(counts_noisy, counts_noisy, "micro", resamples=300)
    assert same["difference"] == 0 and same["low"] <= 0 <= same["high"]
    for average in ("micro", "macro"):
        interval = paired_bootstrap_f1_interval(counts_clean, counts_noisy, average, resamples=500, seed=1)
        expected = np.mean([f1_score(truth, p, average=average) for p in cleaner]) - np.mean(
            [f1_score(truth, p, average=average) for p in noisy])  # fmt: skip
        assert interval["difference"] == pytest.approx(expected)
        assert 0 < interval["low"] < interval["difference"] < interval["high"]
    with pytest.raises(ValueError, match="different texts or labels"):
        paired_bootstrap_f1_interval(counts_noisy, counts_noisy[:, :10], "micro")
