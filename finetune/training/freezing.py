"""Which encoder weights train, and how fast: freezing, gradual unfreezing, layer-wise LR decay.

Every encoder lists its layers bottom-up as groups (`encoder.layer_groups()`): group 0 is the
embedding layer, then one group per block (transformer) or LSTM layer (biLM). The head (BiLSTM,
attention, classifier, and any scalar mix of encoder layers) is never frozen here.
"""

import logging
from dataclasses import dataclass, field

from torch import nn

logger = logging.getLogger(__name__)


@dataclass
class FreezingPolicy:
    """Which encoder layers train: the recipe's freezing flags are this group.

    Attributes:
        freeze_embeddings: Freeze the embedding layer (layer 0).
        freeze_encoder: Freeze every encoder layer (the head and layer mix still train).
        freeze_bottom_layers: Freeze layers 0..N-1 (the embedding layer is layer 0).
        gradual_unfreezing_epochs: k > 0: start with every encoder layer frozen, then unfreeze one
            more layer, top down, every k epochs (ULMFiT). Layers frozen by the options above stay frozen.
    """

    _argument_group_name = "freezing"

    freeze_embeddings: bool = field(default=False, metadata={"help": "Keep the embedding layer (word vectors) fixed."})
    freeze_encoder: bool = field(default=False, metadata={"help": "Freeze every encoder layer (the head trains)."})
    freeze_bottom_layers: int = field(
        default=0, metadata={"help": "Freeze encoder layers 0..N-1 (the embedding layer is layer 0)."}
    )
    gradual_unfreezing_epochs: int = field(
        default=0, metadata={"help": "k > 0: head only at first; unfreeze one more layer, top down, every k epochs."}
    )

    @property
    def freezes_anything(self) -> bool:
        return any(
            (self.freeze_embeddings, self.freeze_encoder, self.freeze_bottom_layers, self.gradual_unfreezing_epochs)
        )

    def frozen_layers(self, num_layers: int) -> int:
        """How many bottom layers stay frozen for the whole run."""
        if self.freeze_encoder:
            return num_layers
        return min(num_layers, max(self.freeze_bottom_layers, int(self.freeze_embeddings)))

    def trainable_layers(self, num_layers: int, epoch: int) -> int:
        """How many top layers train in `epoch` (0-based)."""
        allowed = num_layers - self.frozen_layers(num_layers)
        if self.gradual_unfreezing_epochs > 0:
            return min(allowed, epoch // self.gradual_unfreezing_epochs)
        return allowed


def set_trainable(modules: list[nn.Module], trainable: bool) -> None:
    for module in modules:
        module.requires_grad_(trainable)


def apply_freezing(encoder: nn.Module, policy: FreezingPolicy, epoch: int = 0) -> bool:
    """Sets `requires_grad` of the encoder's layer groups for `epoch`; True when anything changed.

    Args:
        encoder: An encoder with `layer_groups()` (bottom-up lists of modules).
        policy: The freezing options.
        epoch: The epoch about to start (for gradual unfreezing).
    """
    groups = encoder.layer_groups()
    trainable = policy.trainable_layers(len(groups), epoch)
    changed = False
    for index, group in enumerate(groups):
        wanted = index >= len(groups) - trainable
        params = [p for module in group for p in module.parameters()]
        if any(p.requires_grad != wanted for p in params):
            set_trainable(group, wanted)
            changed = True
    if changed:
        logger.info("epoch %d: top %d of %d encoder layers train", epoch, trainable, len(groups))
    return changed


def layer_learning_rates(
    model: nn.Module, learning_rate: float, head_learning_rate: float | None, layer_decay: float
) -> list[tuple[list[nn.Parameter], float]]:
    """(parameters, learning rate) per encoder layer, top down, then for the head.

    The top encoder layer gets `learning_rate`, each one below `layer_decay` times the one above
    (layer-wise LR decay, as in ULMFiT and ELECTRA); the head gets `head_learning_rate`
    (None: `learning_rate`). Frozen parameters are listed too: they may be unfrozen later.
    """
    groups = model.encoder.layer_groups()
    seen, rates = set(), []
    for depth, group in enumerate(reversed(groups)):
        params = [p for module in group for p in module.parameters() if id(p) not in seen]
        seen.update(id(p) for p in params)
        rates.append((params, learning_rate * layer_decay**depth))
    head = [p for p in model.parameters() if id(p) not in seen]
    rates.append((head, learning_rate if head_learning_rate is None else head_learning_rate))
    return rates
