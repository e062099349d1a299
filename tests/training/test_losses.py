"""The imbalance losses as functions: class weights, focal loss, their multi-label (BCE) forms."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import word_vector_model
from sklearn.utils.class_weight import compute_class_weight

from finetune.errors import ArgumentError
from finetune.training.losses import (
    ClassificationLoss,
    balanced_class_weights,
    balanced_pos_weights,
    focal_binary_cross_entropy,
    focal_cross_entropy,
    parse_class_weights,
)

LOGITS = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], [0.0, 0.0, 4.0]])
LABELS = torch.tensor([0, 2, 1, 0])


def test_balanced_weights_are_scikit_learns():
    labels = [0] * 90 + [1] * 9 + [2]
    expected = compute_class_weight("balanced", classes=np.array([0, 1, 2]), y=labels)
    assert balanced_class_weights([90, 9, 1]) == pytest.approx(expected.tolist())
    assert balanced_class_weights([5, 0]) == [pytest.approx(0.5), 1.0]  # an absent class is not infinite


def test_explicit_weights_are_checked_against_the_labels():
    assert parse_class_weights("1,9", ["neg", "pos"], [10, 90]) == [1.0, 9.0]
    assert parse_class_weights("none", ["neg", "pos"], [10, 90]) is None
    assert parse_class_weights("balanced", ["neg", "pos"], [10, 90]) == pytest.approx([5.0, 100 / 180])
    with pytest.raises(ArgumentError, match=r"^--class_weights 1,2,3: 3 weight\(s\) for 2 labels \(neg, pos, in"):
        parse_class_weights("1,2,3", ["neg", "pos"], [10, 90])
    with pytest.raises(ArgumentError, match="^--class_weights heavy: give balanced, none, or one number per label"):
        parse_class_weights("heavy", ["neg", "pos"], [10, 90])
    with pytest.raises(ArgumentError, match="every weight must be above 0"):
        parse_class_weights("0,1", ["neg", "pos"], [10, 90])


def test_focal_loss_with_gamma_0_is_weighted_cross_entropy():
    weight = torch.tensor([3.0, 1.0, 0.5])
    plain = torch.nn.functional.cross_entropy(LOGITS, LABELS)
    weighted = torch.nn.functional.cross_entropy(LOGITS, LABELS, weight=weight)
    assert float(focal_cross_entropy(LOGITS, LABELS, gamma=0.0)) == pytest.approx(float(plain))
    assert float(focal_cross_entropy(LOGITS, LABELS, weight, gamma=0.0)) == pytest.approx(float(weighted))


def test_focal_loss_by_hand_shrinks_easy_examples_most():
    p = LOGITS.softmax(-1)[torch.arange(4), LABELS]
    expected = (-((1 - p) ** 2) * p.log()).mean()
    assert float(focal_cross_entropy(LOGITS, LABELS, gamma=2.0)) == pytest.approx(float(expected))
    # per example: the easy first one (p 0.79) keeps ~4% of its cross-entropy, the hard last one (p 0.02) ~96%
    ratios = (1 - p) ** 2
    assert float(ratios[0]) < 0.05 and float(ratios[3]) > 0.95


def test_classification_loss_picks_weighted_and_focal_forms():
    weights = [3.0, 1.0, 0.5]
    ce = ClassificationLoss("cross_entropy", weights).compute(LOGITS, LABELS)
    assert float(ce) == pytest.approx(float(torch.nn.functional.cross_entropy(LOGITS, LABELS, torch.tensor(weights))))
    focal = ClassificationLoss("focal", weights, gamma=2.0).compute(LOGITS, LABELS)
    assert float(focal) == pytest.approx(float(focal_cross_entropy(LOGITS, LABELS, torch.tensor(weights), 2.0)))
    assert float(focal) < float(ce)
    assert ClassificationLoss("focal", None, 2.0).describe(["a", "b", "c"]) == "focal (gamma 2), unweighted"
    assert ClassificationLoss("cross_entropy", weights).describe(["a", "b", "c"]) == (
        "cross-entropy, class weights a 3.000, b 1.000, c 0.500"
    )


def test_multi_hot_labels_use_binary_cross_entropy_with_pos_weight():
    logits = torch.tensor([[1.0, -2.0, 0.0], [-0.5, 0.5, 3.0]])
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    pos_weight = torch.tensor(balanced_pos_weights([1, 0, 2], total=2))
    assert pos_weight.tolist() == [1.0, 1.0, 0.0]  # neg/pos: 1/1, no positives -> 1, 0/2
    weights = [4.0, 1.0, 0.5]
    bce = ClassificationLoss("cross_entropy", weights).compute(logits, labels)
    expected = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(weights))(logits, labels)
    assert float(bce) == pytest.approx(float(expected))
    # focal-BCE: gamma 0 is BCE; by hand for gamma 2
    assert float(focal_binary_cross_entropy(logits, labels, gamma=0.0)) == pytest.approx(
        float(torch.nn.functional.binary_cross_entropy_with_logits(logits, labels))
    )
    p = logits.sigmoid()
    p_t = torch.where(labels == 1, p, 1 - p)
    by_hand = (-p_t.log() * (1 - p_t) ** 2).mean()
    focal = ClassificationLoss("focal", None, 2.0).compute(logits, labels)
    assert float(focal) == pytest.approx(float(by_hand))


def test_the_adversarial_pass_uses_the_same_loss(tmp_path):
    """TrainingStep calls the loss function for the clean and the adversarial pass alike."""
    from accelerate import Accelerator

    from finetune.training.loop import TrainingStep

    model, tokenizer = word_vector_model(tmp_path)
    calls = []

    class CountingLoss(ClassificationLoss):
        def forward(self, model, batch):
            calls.append(len(batch["labels"]))
            return super().forward(model, batch)

    batch = dict(tokenizer(["这部电影很好", "酒店很差"], padding=True, return_tensors="pt"))
    batch["labels"] = torch.tensor([1, 0])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    training = SimpleNamespace(max_grad_norm=1.0, ema_decay=0.0, adversarial_epsilon=0.5, adversarial_interval=1)
    step = TrainingStep(Accelerator(cpu=True), model, optimizer, scheduler, training, CountingLoss("focal", [5, 1]))
    loss = step(model, batch)
    assert calls == [2, 2] and loss.item() > 0
    step.close()
