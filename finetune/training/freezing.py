"""Which encoder weights train, and how fast: freezing, gradual unfreezing, layer-wise LR decay.

Every encoder lists its layers bottom-up as groups (`encoder.layer_groups()`): group 0 is the
embedding layer, then one group per block (transformer) or LSTM layer (biLM). The head (BiLSTM,
attention, classifier, and any scalar mix of encoder layers) is never frozen here.
"""

import logging

from torch import nn

from finetune.config.tuning_arguments import FreezingPolicy

logger = logging.getLogger(__name__)


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
