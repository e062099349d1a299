"""Classification metrics through `evaluate`, with a module that ships in this package."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from finetune.data.multilabel import (
    config_thresholds,
    is_multi_label,
    multilabel_metrics,
    predicted_label_sets,
    tune_thresholds,
)

if TYPE_CHECKING:
    import evaluate

_MODULE = Path(__file__).parent / "evaluate_modules" / "classification_report" / "classification_report.py"


def load_classification_metric(**kwargs) -> evaluate.EvaluationModule:
    """Loads the local `classification_report` module (accuracy, macro-F1, per class, confusion)."""
    import evaluate  # on first use: its import (scipy.stats) costs ~1.4 s that prediction need not pay

    return evaluate.load(str(_MODULE), **kwargs)


def classification_metrics(predictions, references, id2label: dict[int, str], prefix: str = "") -> dict:
    """Computes the report and flattens it under `prefix`, naming classes by their labels.

    Args:
        predictions: Predicted label ids.
        references: True label ids.
        id2label: Label names by id, as in the model config.
        prefix: Key prefix such as `"test_"`.

    Returns:
        `{prefix}accuracy`, `{prefix}micro_f1` (the accuracy, for single-label data), `{prefix}macro_f1`,
        `{prefix}weighted_f1`, `{prefix}per_class` (label ->
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
        # one label per text and per prediction: micro-averaged F1 is the accuracy
        f"{prefix}micro_f1": report["accuracy"],
        f"{prefix}macro_f1": report["macro_f1"],
        f"{prefix}weighted_f1": report["weighted_f1"],
        f"{prefix}per_class": per_class,
        f"{prefix}confusion_matrix": report["confusion_matrix"],
        f"{prefix}num_examples": len(references),
    }


def predict(model, loader, accelerator) -> tuple[np.ndarray, np.ndarray, float]:
    """Probabilities and labels of every example exactly once (across processes), and the mean loss.
    Multi-label models (`config.problem_type`): sigmoid scores, multi-hot labels, binary cross-entropy."""
    multi_label = accelerator.unwrap_model(model).config.problem_type == "multi_label_classification"
    model.eval()
    probabilities, labels, losses = [], [], []
    with torch.no_grad():
        for batch in loader:
            logits = model(**batch).logits.float()
            # Per example, not the batch mean: in a multi-process run accelerate fills the last
            # batches up with repeated examples, which gather_for_metrics drops row by row.
            if multi_label:  # the model's BCE, averaged over the labels of each example
                example_losses = nn.functional.binary_cross_entropy_with_logits(
                    logits, batch["labels"].float(), reduction="none"
                ).mean(-1)
                scores = logits.sigmoid()
            else:
                example_losses = nn.functional.cross_entropy(logits, batch["labels"], reduction="none")
                scores = logits.softmax(-1)
            probs, refs, loss = accelerator.gather_for_metrics((scores, batch["labels"], example_losses))
            probabilities.append(probs.cpu())
            labels.append(refs.cpu())
            losses.append(loss.cpu())
    model.train()
    return torch.cat(probabilities).numpy(), torch.cat(labels).numpy(), float(torch.cat(losses).mean())


def evaluate_split(model, loader, accelerator, prefix: str, return_scores: bool = False, tune=None):
    """Metrics of `model` on a prepared evaluation loader (every example once, across processes).

    Args:
        model: The classifier (prepared, or a weight average's module).
        loader: Batches from `features.eval_dataloader`, prepared by the accelerator.
        accelerator: The run's `Accelerator`.
        prefix: Key prefix, e.g. `"validation_"`.
        return_scores: Also return the class probabilities, in the loader's order.
        tune: Multi-label: (strategy, metric): score at thresholds tuned on these very rows for `metric`
            (`multilabel.tune_thresholds`), as the run's model will be once trained; the training loop
            selects epochs so. None: at the config's thresholds.

    Returns:
        `classification_metrics` (multi-label: `multilabel_metrics` at the config's or the tuned thresholds)
        plus `{prefix}loss`; with `return_scores`, (metrics, probabilities).
    """
    probabilities, labels, loss = predict(model, loader, accelerator)
    config = accelerator.unwrap_model(model).config
    if is_multi_label(config):
        thresholds = config_thresholds(config) if tune is None else tune_thresholds(probabilities, labels, *tune)
        predictions = predicted_label_sets(probabilities, thresholds)
        scores = multilabel_metrics(predictions, labels, config.id2label, prefix=prefix)
    else:
        scores = classification_metrics(probabilities.argmax(-1), labels, config.id2label, prefix=prefix)
    metrics = {**scores, f"{prefix}loss": loss}
    return (metrics, probabilities) if return_scores else metrics


def metric_value(metrics: dict, name: str, prefix: str = "validation_") -> float:
    """A metric by its `metric_for_best_model` name: `macro_f1` is `metrics[prefix + "macro_f1"]`,
    `f1:LABEL` that label's F1 in `metrics[prefix + "per_class"]`."""
    if name.startswith("f1:"):
        return metrics[f"{prefix}per_class"][name.removeprefix("f1:")]["f1"]
    return metrics[prefix + name]


HEADLINE = ("loss", "accuracy", "macro_f1")


def short_metrics(metrics: dict, prefix: str = "validation_") -> dict:
    """The headline numbers (loss, accuracy, macro-F1; multi-label: and micro-F1) without their prefix."""
    keys = HEADLINE + (("micro_f1",) if prefix + "exact_match" in metrics else ())
    return {key: metrics[prefix + key] for key in keys}


def log_line(metrics: dict, prefix: str = "validation_") -> str:
    """`loss=0.3012 accuracy=0.8800 macro_f1=0.8790`."""
    return " ".join(f"{key}={value:.4f}" for key, value in short_metrics(metrics, prefix).items())
