"""Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix in one pass.

An `evaluate` module loaded from this file (`evaluate.load(path)`), so metrics work where the
Hub's `accuracy`/`f1` scripts cannot be downloaded.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Classification report: accuracy, macro/weighted F1, per-class P/R/F1, confusion matrix."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): predicted label ids.
    references (`list[int]`): true label ids.
    num_labels (`int`, optional): number of classes; defaults to 1 + the largest id seen.
Returns:
    accuracy, macro_f1, weighted_f1, per-class `precision`/`recall`/`f1`/`support` lists indexed by
    label id, and `confusion_matrix` (rows: true label, columns: predicted label).
"""


class ClassificationReport(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, num_labels=None):
        predictions = np.asarray(predictions, dtype=np.int64)
        references = np.asarray(references, dtype=np.int64)
        if num_labels is None:
            num_labels = int(max(predictions.max(initial=0), references.max(initial=0))) + 1
        confusion = np.zeros((num_labels, num_labels), dtype=np.int64)
        np.add.at(confusion, (references, predictions), 1)
        true_positives = np.diag(confusion).astype(np.float64)
        support = confusion.sum(axis=1)
        predicted = confusion.sum(axis=0)
        # Zero where undefined (no predictions / no examples of a class), as scikit-learn does.
        precision = np.divide(true_positives, predicted, out=np.zeros(num_labels), where=predicted > 0)
        recall = np.divide(true_positives, support, out=np.zeros(num_labels), where=support > 0)
        denominator = precision + recall
        f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(num_labels), where=denominator > 0)
        total = max(int(support.sum()), 1)
        return {
            "accuracy": float(true_positives.sum() / total),
            "macro_f1": float(f1.mean()),
            "weighted_f1": float((f1 * support).sum() / total),
            "precision": precision.tolist(),
            "recall": recall.tolist(),
            "f1": f1.tolist(),
            "support": support.tolist(),
            "confusion_matrix": confusion.tolist(),
        }
