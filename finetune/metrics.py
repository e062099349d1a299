"""Classification metrics through `evaluate`, with a module that ships in this package."""

from pathlib import Path

import evaluate

_MODULE = Path(__file__).parent / "evaluate_modules" / "classification_report" / "classification_report.py"


def load_classification_metric(**kwargs) -> evaluate.EvaluationModule:
    """Loads the local `classification_report` module (accuracy, macro-F1, per class, confusion)."""
    return evaluate.load(str(_MODULE), **kwargs)


def classification_metrics(predictions, references, id2label: dict[int, str], prefix: str = "") -> dict:
    """Computes the report and flattens it under `prefix`, naming classes by their labels.

    Args:
        predictions: Predicted label ids.
        references: True label ids.
        id2label: Label names by id, as in the model config.
        prefix: Key prefix such as `"test_"`.

    Returns:
        `{prefix}accuracy`, `{prefix}macro_f1`, `{prefix}weighted_f1`, `{prefix}per_class` (label ->
        precision/recall/f1/support), `{prefix}confusion_matrix`, and `{prefix}num_examples`.
    """
    report = load_classification_metric().compute(
        predictions=predictions, references=references, num_labels=len(id2label)
    )
    per_class = {
        id2label[i]: {key: report[key][i] for key in ("precision", "recall", "f1", "support")}
        for i in range(len(id2label))
    }
    return {
        f"{prefix}accuracy": report["accuracy"],
        f"{prefix}macro_f1": report["macro_f1"],
        f"{prefix}weighted_f1": report["weighted_f1"],
        f"{prefix}per_class": per_class,
        f"{prefix}confusion_matrix": report["confusion_matrix"],
        f"{prefix}num_examples": len(references),
    }
