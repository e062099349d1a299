"""Judging a model: metrics, evaluating a saved model on a file, reports and pictures, the baselines
(TF-IDF + LR, fastText) and comparisons over seeds."""
