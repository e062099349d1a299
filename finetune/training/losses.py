"""Training losses for imbalanced classes: class weights and the focal loss (Lin et al., 2017, "Focal
Loss for Dense Object Detection").

They live here, in the training loop's `loss_function` (`TrainingStep`), and not in the model's
`forward`: the saved model, `pipeline()` and a Hub user see the plain classifier, and a weight
learnt from one training set is not baked into the model. The adversarial pass
(`EmbeddingAdversary.loss`) is given the same function, so both passes optimise one loss.

Single-label batches (integer class ids) use softmax cross-entropy; multi-label batches (2-D
float multi-hot labels) use binary cross-entropy, with the weights as `pos_weight` per label.
"""

import logging
from collections.abc import Sequence

import torch
from torch import nn

from finetune.errors import ArgumentError

logger = logging.getLogger(__name__)


def balanced_class_weights(counts: Sequence[int]) -> list[float]:
    """scikit-learn's `class_weight="balanced"`: n_samples / (n_classes * count) per class, so every
    class weighs as much in the loss as the others in total. A class absent from training gets 1.0
    (there is nothing to weigh, and an infinite weight would only poison the optimizer)."""
    total, classes = sum(counts), len(counts)
    return [total / (classes * count) if count else 1.0 for count in counts]


def balanced_pos_weights(positives: Sequence[int], total: int) -> list[float]:
    """Multi-label `pos_weight` per label: negatives / positives (torch's `BCEWithLogitsLoss` recipe),
    1.0 for a label without positives."""
    return [(total - count) / count if count else 1.0 for count in positives]


def parse_class_weights(spec: str, label_names: Sequence[str], counts: Sequence[int]) -> list[float] | None:
    """`--class_weights`: `none` (None), `balanced` (from the training counts) or weights in label order.

    Args:
        spec: The flag's value.
        label_names: The labels in id order (`id2label`'s values).
        counts: Training examples per label (positives per label for multi-label data), in id order.

    Raises:
        ArgumentError: Not a number, not above 0, or not one weight per label (naming the labels).
    """
    if spec == "none":
        return None
    if spec == "balanced":
        return balanced_class_weights(counts)
    try:
        weights = [float(part) for part in spec.split(",")]
    except ValueError:
        raise ArgumentError(f"--class_weights {spec}: give balanced, none, or one number per label") from None
    if len(weights) != len(label_names):
        raise ArgumentError(
            f"--class_weights {spec}: {len(weights)} weight(s) for {len(label_names)} labels "
            f"({', '.join(label_names)}, in that order)"
        )
    if not all(weight > 0 for weight in weights):
        raise ArgumentError(f"--class_weights {spec}: every weight must be above 0")
    return weights


def focal_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None, gamma: float = 2.0
) -> torch.Tensor:
    """Softmax focal loss: -alpha_y (1 - p_y)^gamma log p_y, averaged as torch's weighted cross-entropy
    averages (divided by the sum of the examples' weights), so gamma 0 is exactly `cross_entropy`
    with the same `weight`. Confident, right answers (p_y near 1) count little: the many easy
    examples of a large class stop drowning the hard ones."""
    log_p = torch.log_softmax(logits.float(), dim=-1).gather(1, labels.view(-1, 1)).squeeze(1)
    loss = -((1 - log_p.exp()) ** gamma) * log_p
    if weight is None:
        return loss.mean()
    alpha = weight[labels]
    return (alpha * loss).sum() / alpha.sum()


def focal_binary_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, pos_weight: torch.Tensor | None = None, gamma: float = 2.0
) -> torch.Tensor:
    """Sigmoid focal loss per label (torchvision's `sigmoid_focal_loss`, with `pos_weight` in the
    cross-entropy as `BCEWithLogitsLoss` has it), averaged over examples and labels; gamma 0 is
    `binary_cross_entropy_with_logits`."""
    logits, labels = logits.float(), labels.float()
    ce = nn.functional.binary_cross_entropy_with_logits(logits, labels, pos_weight=pos_weight, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * labels + (1 - p) * (1 - labels)
    return (ce * (1 - p_t) ** gamma).mean()


class ClassificationLoss(nn.Module):
    """`loss_function(model, batch) -> loss` for `TrainingStep`: (focal) cross-entropy with optional
    class weights; on multi-hot float labels, (focal) binary cross-entropy with `pos_weight`.

    Args:
        loss: `cross_entropy` or `focal`.
        weights: One weight per label (None: all 1); a buffer, so `.to(device)` moves it.
        gamma: The focal loss's focusing parameter (2.0 in Lin et al.; 0 is cross-entropy).
    """

    def __init__(self, loss: str = "cross_entropy", weights: Sequence[float] | None = None, gamma: float = 2.0):
        super().__init__()
        self.loss, self.gamma = loss, gamma
        self.register_buffer("weights", None if weights is None else torch.tensor(weights, dtype=torch.float32))

    def compute(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss of `logits` against `labels` (class ids, or multi-hot floats of the logits' shape)."""
        gamma = self.gamma if self.loss == "focal" else 0.0
        weights = None if self.weights is None else self.weights.to(logits.device)
        if labels.is_floating_point() and labels.dim() == 2:
            if gamma == 0:
                return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels, pos_weight=weights)
            return focal_binary_cross_entropy(logits, labels, weights, gamma)
        if gamma == 0:
            return nn.functional.cross_entropy(logits.float(), labels.view(-1), weight=weights)
        return focal_cross_entropy(logits, labels.view(-1), weights, gamma)

    def forward(self, model, batch: dict) -> torch.Tensor:
        """Runs `model` on `batch` without its labels (the model's own loss would be wasted) and scores it."""
        inputs = {key: value for key, value in batch.items() if key != "labels"}
        return self.compute(model(**inputs).logits, batch["labels"])

    def describe(self, label_names: Sequence[str]) -> str:
        """One log line: the loss and the weight of each label."""
        what = f"focal (gamma {self.gamma:g})" if self.loss == "focal" else "cross-entropy"
        if self.weights is None:
            return f"{what}, unweighted"
        weights = ", ".join(f"{name} {float(w):.3f}" for name, w in zip(label_names, self.weights, strict=True))
        return f"{what}, class weights {weights}"


def training_loss(training, distribution: dict) -> ClassificationLoss | None:
    """The training loss `--loss`, `--focal_gamma` and `--class_weights` ask for (balanced: from the
    training split's counts), logged; None for plain, unweighted cross-entropy (the model's own loss).

    Raises:
        ArgumentError: Weights that do not fit the labels (naming the flag and the labels).
    """
    train = distribution["train"]
    weights = parse_class_weights(training.class_weights, list(train), [row["count"] for row in train.values()])
    if weights is None and training.loss == "cross_entropy":
        return None
    loss = ClassificationLoss(training.loss, weights, training.focal_gamma)
    logger.info("training loss: %s", loss.describe(list(train)))
    return loss
