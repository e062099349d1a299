"""Baselines for Chinese text classification: TF-IDF + logistic regression, fastText, transformers' `Trainer`.

Both have the same small interface (`Baseline`): `fit(train_texts, train_labels, dev_texts,
dev_labels)` trains on the training texts and picks its hyper-parameter on the dev texts (by
macro-F1, the recipe's `metric_for_best_model`); `predict_proba(texts)` gives one row of label
probabilities per text, columns in label-id order. Labels are ids 0..K-1, as `load_data` numbers
them. `scripts/benchmark.py` compares the recipe with them; an ensemble, or a teacher to distil
from, can reuse them.

- `TfidfLogisticRegression`: character 1-3-gram TF-IDF (sublinear tf, min_df 2) and L2 logistic
  regression, C from 0.5..16 by dev macro-F1; on multi-hot labels (multi-label data) one-vs-rest,
  one binary regression per label, C and a global threshold by dev micro-F1. Deterministic. Needs scikit-learn
  (a dependency: the default recipe's TF-IDF branch fits this model), imported only when fitted.
- `FastTextClassifier` (Joulin et al. 2017, "Bag of Tricks for Efficient Text Classification"):
  the mean of the embeddings of a text's words and hashed word bigrams, then a linear layer, in
  torch on rjieba's words; Adam, a few epochs, the learning rate (from a grid) and the epoch by dev
  macro-F1. Seeded: the same seed gives the same model.
"""

from __future__ import annotations

import copy
import logging
import time
import zlib
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch import nn

from finetune.data.multilabel import f1_score, predicted_label_sets, tune_thresholds
from finetune.models.bilstm_attention.tokenization_jieba import load_segmenter

__all__ = [
    "BASELINES",
    "DEFAULT_BASELINES",
    "Baseline",
    "FastTextClassifier",
    "TfidfBalanced",
    "TfidfLogisticRegression",
    "TrainerClassifier",
    "macro_f1",
    "make_baseline",
]

logger = logging.getLogger(__name__)


class Baseline(Protocol):
    """What the benchmark (and an ensemble) needs of a baseline."""

    name: str  # short, for file names and tables
    title: str  # what the table calls it
    deterministic: bool  # True: one run says it all; False: run it with several seeds
    multi_label_capable: bool  # fits multi-hot label rows (then `threshold` holds its decision threshold)
    selection: dict  # the hyper-parameters chosen on dev, and their dev scores

    def fit(self, train_texts: Sequence[str], train_labels: Sequence[int], dev_texts: Sequence[str],
            dev_labels: Sequence[int]) -> Baseline: ...  # fmt: skip

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray: ...


def macro_f1(labels: Sequence[int], predicted: Sequence[int], num_labels: int) -> float:
    """F1 averaged over the labels 0..num_labels-1 (0 for a label never predicted nor present), as the
    recipe's `classification_report` computes it."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    scores = []
    for label in range(num_labels):
        true_positive = np.sum((predicted == label) & (labels == label))
        denominator = np.sum(predicted == label) + np.sum(labels == label)
        scores.append(2 * true_positive / denominator if denominator else 0.0)
    return float(np.mean(scores))


def _sklearn():
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        raise ImportError("the TF-IDF baseline needs scikit-learn: pip install scikit-learn") from None
    return TfidfVectorizer, LogisticRegression


SINGLE_LABEL_C_GRID = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
MULTI_LABEL_C_GRID = (1.0, 4.0, 16.0, 64.0, 256.0)


def _log_grid_step(number: int, grid: tuple, metric: str, score: float, started: float) -> None:
    c = grid[number - 1]
    seconds = time.perf_counter() - started
    logger.info("TF-IDF + LR: C %g (%d/%d): dev %s %.4f in %.1fs", c, number, len(grid), metric, score, seconds)


class TfidfLogisticRegression:
    """Character n-gram TF-IDF + logistic regression, C picked on dev.

    Args:
        c_grid: The inverse regularisation strengths tried; ties go to the first (the strongest). None:
            0.5..16, and 1..256 for multi-label data (a binary regression per label with few positives:
            on the news titles + reviews set dev micro-F1 rose up to C 64-256).
        ngram_range: Character n-gram lengths.
        min_df: Keep n-grams found in at least this many training texts.
        seed: Passed to the solver (lbfgs is deterministic; kept for the common interface).
        analyzer: A function from a text to its n-grams, instead of scikit-learn's char analyzer
            (`ngram_range` then unused); the TF-IDF branch passes the tokenizer's normalisation + `char_ngrams`.
        class_weight: scikit-learn's: None, or "balanced" (each class weighted n_samples / (n_classes x
            count): what a user with a rare class runs, `TfidfBalanced`).
    """

    name = "tfidf_lr"
    title = "TF-IDF char 1-3-gram + LR"
    deterministic = True
    multi_label_capable = True
    multi_label = False  # set by `fit`

    def __init__(
        self,
        c_grid=None,
        ngram_range=(1, 3),
        min_df: int = 2,
        seed: int = 0,
        analyzer=None,
        class_weight: str | None = None,
    ):
        self.c_grid = None if c_grid is None else tuple(c_grid)
        self.ngram_range, self.min_df, self.seed = tuple(ngram_range), min_df, seed
        self.analyzer, self.class_weight = analyzer, class_weight
        self.selection: dict = {}

    def fit(self, train_texts, train_labels, dev_texts, dev_labels) -> TfidfLogisticRegression:
        vectorizer_class, regression_class = _sklearn()
        self.multi_label = np.ndim(train_labels[0]) == 1  # multi-hot rows: one-vs-rest
        self.num_labels = len(train_labels[0]) if self.multi_label else int(max(train_labels)) + 1
        cut = {"analyzer": self.analyzer} if self.analyzer else {"analyzer": "char", "ngram_range": self.ngram_range}
        self.vectorizer = vectorizer_class(sublinear_tf=True, min_df=self.min_df, **cut)
        # A line per step: on tens of thousands of texts each takes up to a minute (the TF-IDF branch)
        started = time.perf_counter()
        logger.info("TF-IDF: vectorizing %d training and %d dev texts", len(train_texts), len(dev_texts))
        x_train = self.vectorizer.fit_transform(list(train_texts))
        x_dev = self.vectorizer.transform(list(dev_texts))
        logger.info("TF-IDF: %s n-grams in %.1fs", f"{x_train.shape[1]:,}", time.perf_counter() - started)
        if self.multi_label:
            return self._fit_one_vs_rest(x_train, np.asarray(train_labels), x_dev, np.asarray(dev_labels))
        scores, best = {}, None
        grid = self.c_grid or SINGLE_LABEL_C_GRID
        for number, c in enumerate(grid, start=1):
            started = time.perf_counter()
            model = regression_class(C=c, max_iter=2000, random_state=self.seed, class_weight=self.class_weight)
            model.fit(x_train, list(train_labels))
            scores[c] = macro_f1(dev_labels, model.predict(x_dev), self.num_labels)
            _log_grid_step(number, grid, "macro-F1", scores[c], started)
            if best is None or scores[c] > scores[best[0]]:
                best = (c, model)
        self.model = best[1]
        self.selection = {"C": best[0], "dev_macro_f1": scores[best[0]], "dev_macro_f1_by_C": scores}
        return self

    def _fit_one_vs_rest(self, x_train, y_train, x_dev, y_dev) -> TfidfLogisticRegression:
        """Multi-label: one binary logistic regression per label (scikit-learn's one-vs-rest), C and a
        global decision threshold chosen together by dev micro-F1 (`multilabel.tune_thresholds`)."""
        scores, best = {}, None
        grid = self.c_grid or MULTI_LABEL_C_GRID
        for number, c in enumerate(grid, start=1):
            started = time.perf_counter()
            self.coef_, self.intercept_ = self._one_vs_rest(x_train, y_train, c)
            probabilities = self._sigmoid(x_dev)
            threshold = tune_thresholds(probabilities, y_dev, "global", "micro_f1")
            scores[c] = f1_score(predicted_label_sets(probabilities, threshold), y_dev, "micro")
            _log_grid_step(number, grid, "micro-F1", scores[c], started)
            if best is None or scores[c] > scores[best[0]]:
                best = (c, (self.coef_, self.intercept_), float(threshold[0]))
        self.coef_, self.intercept_ = best[1]
        self.threshold = best[2]
        self.selection = {"C": best[0], "threshold": best[2], "dev_micro_f1": scores[best[0]],
                          "dev_micro_f1_by_C": scores}  # fmt: skip
        return self

    def _one_vs_rest(self, x, y: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray]:
        """(labels, features) weights and (labels,) biases of a binary logistic regression per label; a
        label on no (or every) training row gets a large negative (positive) bias and no weights."""
        _, regression_class = _sklearn()
        coef, intercept = np.zeros((y.shape[1], x.shape[1])), np.zeros(y.shape[1])
        for label in range(y.shape[1]):
            column = y[:, label] > 0.5
            if column.all() or not column.any():
                intercept[label] = 30.0 if column.all() else -30.0
                continue
            model = regression_class(C=c, max_iter=2000, random_state=self.seed, class_weight=self.class_weight)
            model.fit(x, column)
            coef[label], intercept[label] = model.coef_[0], model.intercept_[0]
        return coef, intercept

    def _sigmoid(self, x) -> np.ndarray:
        return 1 / (1 + np.exp(-(np.asarray(x @ self.coef_.T) + self.intercept_)))

    def predict_proba(self, texts) -> np.ndarray:
        """Label probabilities, one row per text: softmax over the labels, or (multi-label) each label's sigmoid."""
        if self.multi_label:
            return self._sigmoid(self.vectorizer.transform(list(texts)))
        scores = self.model.predict_proba(self.vectorizer.transform(list(texts)))
        probabilities = np.zeros((len(scores), self.num_labels))
        probabilities[:, self.model.classes_] = scores  # a label absent from train keeps 0
        return probabilities


class _BagOfNgrams(nn.Module):
    """Mean of the n-gram embeddings of each text -> linear (fastText's model, without the softmax)."""

    def __init__(self, num_embeddings: int, dim: int, num_labels: int, generator: torch.Generator):
        super().__init__()
        self.embeddings = nn.EmbeddingBag(num_embeddings, dim, mode="mean", sparse=True)
        self.classifier = nn.Linear(dim, num_labels)
        # fastText's initialisation: input vectors uniform in +-1/dim, output zero
        nn.init.uniform_(self.embeddings.weight, -1 / dim, 1 / dim, generator=generator)
        nn.init.zeros_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embeddings(ids, offsets))


def _batch(rows: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    ids = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    return torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(offsets)


class FastTextClassifier:
    """fastText (Joulin et al. 2017): the mean of word and hashed word-bigram embeddings -> linear.

    Args:
        dim: Embedding size.
        buckets: Hash buckets shared by the word bigrams (fastText uses millions; 2^18 fits 33k
            news titles with few collisions, at 67 MB for dim 64).
        epochs: Passes over the training texts; the best epoch on dev is kept.
        learning_rates: Adam learning rates tried; the best on dev is kept (ties: the first). On
            THUCNews titles, dev macro-F1 peaked at epoch 4 with 0.01 and was still rising at epoch 5
            with 0.003; 0.03 was worse at every epoch.
        batch_size: Texts per step.
        segmenter: "rjieba", "jieba" or "char" (`load_segmenter`).
        seed: Seeds the initialisation and the order of the texts.
    """

    name = "fasttext"
    title = "fastText (words + hashed bigrams)"
    deterministic = False
    multi_label_capable = False

    def __init__(self, dim: int = 64, buckets: int = 2**18, epochs: int = 8, learning_rates=(0.003, 0.01),
                 batch_size: int = 32, segmenter: str = "rjieba", seed: int = 0):  # fmt: skip
        self.dim, self.buckets, self.epochs, self.learning_rates = dim, buckets, epochs, tuple(learning_rates)
        self.batch_size, self.segmenter, self.seed = batch_size, segmenter, seed
        self.selection: dict = {}

    def _ngram_ids(self, texts) -> list[np.ndarray]:
        """Each text's word ids (known words only) and bigram ids (every adjacent pair, hashed)."""
        rows = []
        for text in texts:
            words = [word for word in self._cut(text) if word.strip()]
            known = [self.vocabulary[word] for word in words if word in self.vocabulary]
            # crc32, not hash(): Python salts str hashes per process, and a saved model must agree
            bigrams = [
                len(self.vocabulary) + zlib.crc32(f"{a}\x00{b}".encode()) % self.buckets
                for a, b in zip(words, words[1:])
            ]
            rows.append(np.asarray(known + bigrams, dtype=np.int64))
        return rows

    def fit(self, train_texts, train_labels, dev_texts, dev_labels) -> FastTextClassifier:
        self._cut = load_segmenter(self.segmenter)
        words = {word for text in train_texts for word in self._cut(text) if word.strip()}
        self.vocabulary = {word: index for index, word in enumerate(sorted(words))}
        self.num_labels = int(max(train_labels)) + 1
        train_rows, dev_rows = self._ngram_ids(train_texts), self._ngram_ids(dev_texts)
        train_labels = np.asarray(train_labels, dtype=np.int64)
        best, scores = None, {}
        for learning_rate in self.learning_rates:
            model, epoch, score, by_epoch = self._train(train_rows, train_labels, dev_rows, dev_labels, learning_rate)
            scores[learning_rate] = by_epoch
            if best is None or score > best[2]:
                best = (learning_rate, epoch, score, model)
        self.model = best[3]
        self.selection = {
            "learning_rate": best[0],
            "epochs": best[1],
            "dev_macro_f1": best[2],
            "dev_macro_f1_by_learning_rate_and_epoch": scores,
        }
        return self

    def _train(self, train_rows, train_labels, dev_rows, dev_labels, learning_rate: float):
        """One model at one learning rate; returns the best epoch's model, the epoch, its dev
        macro-F1 and the dev macro-F1 of every epoch."""
        generator = torch.Generator().manual_seed(self.seed)
        order_rng = np.random.default_rng(self.seed)
        self.model = _BagOfNgrams(len(self.vocabulary) + self.buckets, self.dim, self.num_labels, generator)
        optimizers = [
            torch.optim.SparseAdam(self.model.embeddings.parameters(), lr=learning_rate),
            torch.optim.Adam(self.model.classifier.parameters(), lr=learning_rate),
        ]
        best, by_epoch = None, []
        for epoch in range(1, self.epochs + 1):
            self.model.train()
            order = order_rng.permutation(len(train_rows))
            for start in range(0, len(order), self.batch_size):
                chosen = order[start : start + self.batch_size]
                logits = self.model(*_batch([train_rows[i] for i in chosen]))
                loss = nn.functional.cross_entropy(logits, torch.from_numpy(train_labels[chosen]))
                for optimizer in optimizers:
                    optimizer.zero_grad()
                loss.backward()
                for optimizer in optimizers:
                    optimizer.step()
            score = macro_f1(dev_labels, self._probabilities(dev_rows).argmax(-1), self.num_labels)
            by_epoch.append(score)
            if best is None or score > best[1]:
                best = (epoch, score, copy.deepcopy(self.model.state_dict()))
        self.model.load_state_dict(best[2])
        return self.model, best[0], best[1], by_epoch

    @torch.inference_mode()
    def _probabilities(self, rows: list[np.ndarray], batch_size: int = 1024) -> np.ndarray:
        self.model.eval()
        parts = [
            torch.softmax(self.model(*_batch(rows[start : start + batch_size])), dim=-1).numpy()
            for start in range(0, len(rows), batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self.num_labels))

    def predict_proba(self, texts) -> np.ndarray:
        return self._probabilities(self._ngram_ids(texts))


class TfidfBalanced(TfidfLogisticRegression):
    """`TfidfLogisticRegression` with `class_weight="balanced"`: the cheap baseline for imbalanced classes,
    against which `--class_weights` and `--loss focal` are measured (C still picked by dev macro-F1)."""

    name = "tfidf_lr_balanced"
    title = "TF-IDF char 1-3-gram + LR, class_weight balanced"

    def __init__(self, **kwargs):
        super().__init__(class_weight="balanced", **kwargs)


from finetune.evaluation.trainer_baseline import TrainerClassifier  # noqa: E402  (it imports macro_f1 from here)

BASELINES = {
    baseline.name: baseline
    for baseline in (TfidfLogisticRegression, FastTextClassifier, TfidfBalanced, TrainerClassifier)
}


def make_baseline(name: str, seed: int = 0, run_args=None) -> Baseline:
    """Baseline `name` for `seed`; one that needs the recipe's settings (the Trainer's checkpoint, epochs and rate)
    is built from `run_args` (`parse_run_args`' groups)."""
    if getattr(BASELINES[name], "needs_run_args", False):
        return BASELINES[name].from_run_args(run_args, seed)
    return BASELINES[name](seed=seed)


# What `scripts/benchmark.py` runs unless told otherwise (the balanced baseline: for imbalanced data)
DEFAULT_BASELINES = ("tfidf_lr", "fasttext")
