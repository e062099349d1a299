"""Which parameters train: layer freezing and LoRA, each policy its own argument group (the recipe's
`freeze_*` and `lora_*` flags). The training side that applies them is `finetune.training.freezing`
and `finetune.training.lora`."""

from dataclasses import dataclass, field


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


@dataclass
class LoraOptions:
    """LoRA on the encoder: the recipe's `lora_*` flags are this group (`lora: {r, alpha, ...}` in
    the YAML); `lora_r = 0` turns it off."""

    _argument_group_name = "LoRA"

    lora_r: int = field(default=0, metadata={"help": "LoRA rank on the encoder (peft); 0: no LoRA."})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA branch."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Encoder modules LoRA wraps (none: query/key/value for BERTs, the embeddings for a biLM)."},
    )
    lora_merge: bool = field(
        default=False, metadata={"help": "Also save the adapter merged into the weights, in OUTPUT_DIR/merged/."}
    )

    @property
    def enabled(self) -> bool:
        return self.lora_r > 0
