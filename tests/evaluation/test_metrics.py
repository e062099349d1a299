"""finetune.evaluation.metrics and its local `evaluate` module, checked against scikit-learn."""

import json
import math
import os

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from finetune.evaluation.metrics import classification_metrics, load_classification_metric

ID2LABEL = {0: "negative", 1: "neutral", 2: "positive"}


def sklearn_report(references, predictions, labels):
    precision, recall, f1, support = precision_recall_fscore_support(
        references, predictions, labels=labels, zero_division=0
    )
    return {
        "accuracy": accuracy_score(references, predictions),
        "macro_f1": f1_score(references, predictions, labels=labels, average="macro", zero_division=0),
        "weighted_f1": f1_score(references, predictions, labels=labels, average="weighted", zero_division=0),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": support,
        "confusion_matrix": confusion_matrix(references, predictions, labels=labels).tolist(),
    }


def assert_matches_sklearn(metrics, references, predictions, prefix=""):
    expected = sklearn_report(references, predictions, list(ID2LABEL))
    assert metrics[f"{prefix}accuracy"] == pytest.approx(expected["accuracy"], abs=1e-12)
    assert metrics[f"{prefix}macro_f1"] == pytest.approx(expected["macro_f1"], abs=1e-12)
    assert metrics[f"{prefix}weighted_f1"] == pytest.approx(expected["weighted_f1"], abs=1e-12)
    assert metrics[f"{prefix}confusion_matrix"] == expected["confusion_matrix"]
    assert metrics[f"{prefix}num_examples"] == len(references)
    per_class = metrics[f"{prefix}per_class"]
    assert list(per_class) == list(ID2LABEL.values())
    for i, name in ID2LABEL.items():
        assert per_class[name]["precision"] == pytest.approx(expected["precision"][i], abs=1e-12)
        assert per_class[name]["recall"] == pytest.approx(expected["recall"][i], abs=1e-12)
        assert per_class[name]["f1"] == pytest.approx(expected["f1"][i], abs=1e-12)
        assert per_class[name]["support"] == expected["support"][i]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    references = rng.integers(0, 3, size=200)
    # better than chance, so that the numbers are not all alike
    predictions = np.where(rng.random(200) < 0.6, references, rng.integers(0, 3, size=200))
    metrics = classification_metrics(predictions.tolist(), references.tolist(), ID2LABEL)
    assert_matches_sklearn(metrics, references, predictions)
    assert 0.6 < metrics["accuracy"] < 0.85


def test_prefix_names_every_key():
    references, predictions = [0, 1, 2, 2], [0, 2, 2, 1]
    metrics = classification_metrics(predictions, references, ID2LABEL, prefix="test_")
    assert set(metrics) == {
        "test_accuracy",
        "test_micro_f1",
        "test_macro_f1",
        "test_weighted_f1",
        "test_per_class",
        "test_confusion_matrix",
        "test_num_examples",
    }
    assert_matches_sklearn(metrics, references, predictions, prefix="test_")
    assert metrics["test_accuracy"] == metrics["test_micro_f1"] == 0.5
    assert metrics["test_confusion_matrix"] == [[1, 0, 0], [0, 0, 1], [0, 1, 1]]


def test_class_never_predicted_has_zero_precision_not_nan():
    references = [0, 1, 2, 2, 1, 0, 1]
    predictions = [0, 0, 2, 2, 0, 0, 2]  # 1 (neutral) is never predicted
    metrics = classification_metrics(predictions, references, ID2LABEL)
    neutral = metrics["per_class"]["neutral"]
    assert neutral == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 3}
    values = [v for c in metrics["per_class"].values() for v in c.values()]
    assert not any(math.isnan(v) for v in values + [metrics["macro_f1"], metrics["weighted_f1"]])
    assert_matches_sklearn(metrics, references, predictions)


def test_class_absent_from_data_counts_in_the_report():
    references, predictions = [0, 0, 2, 2], [0, 0, 2, 0]  # no neutral at all, as in a small test split
    metrics = classification_metrics(predictions, references, ID2LABEL)
    assert metrics["per_class"]["neutral"]["support"] == 0
    assert len(metrics["confusion_matrix"]) == 3 and all(len(row) == 3 for row in metrics["confusion_matrix"])
    assert_matches_sklearn(metrics, references, predictions)


def test_perfect_predictions():
    labels = [2, 0, 1, 1, 0, 2, 2]
    metrics = classification_metrics(labels, labels, ID2LABEL)
    assert metrics["accuracy"] == metrics["macro_f1"] == metrics["weighted_f1"] == 1.0
    assert metrics["confusion_matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 3]]


def test_module_loads_offline_and_infers_num_labels():
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    metric = load_classification_metric()
    report = metric.compute(predictions=[0, 1, 1, 3], references=[0, 1, 2, 3])
    assert len(report["confusion_matrix"]) == 4  # 1 + the largest id seen
    assert report["support"] == [1, 1, 1, 1]
    assert report["precision"] == [1.0, 0.5, 0.0, 1.0]
    assert report["accuracy"] == 0.75


def test_metrics_are_json_serialisable():
    metrics = classification_metrics(np.array([0, 1, 2]), np.array([0, 1, 1]), ID2LABEL)
    assert json.loads(json.dumps(metrics)) == metrics
