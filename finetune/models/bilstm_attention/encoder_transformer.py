"""The `transformer` encoder: any `AutoModel` (BERT, RoBERTa-wwm, MacBERT, ELECTRA...).

This file travels to the Hub as custom code: it imports only torch, transformers and its sibling
files.
"""

from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import AutoConfig, AutoModel

from .modeling_bilm import ScalarMix

if TYPE_CHECKING:
    from .configuration_bilstm_attention import BiLSTMAttentionConfig

# Attention projections of the BERT family (BERT, RoBERTa-wwm, MacBERT, ELECTRA, ERNIE, NEZHA...).
BERT_LORA_TARGETS = ["query", "key", "value"]


def find_layer_list(model: nn.Module, num_layers: int) -> nn.ModuleList:
    """The model's list of transformer blocks (`encoder.layer` in BERT, `layers` in others)."""
    for name in ("encoder.layer", "layers", "transformer.layer", "layer", "h", "encoder.layers"):
        module = model.get_submodule(name) if _has_submodule(model, name) else None
        if isinstance(module, nn.ModuleList) and len(module) == num_layers:
            return module
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == num_layers]
    if not lists:
        raise ValueError(f"no list of {num_layers} layers found in {type(model).__name__}")
    return lists[0]


def _has_submodule(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


class TransformerEncoder(nn.Module):
    """Any `AutoModel` (BERT, RoBERTa, ELECTRA...): its last layer, or a scalar mix of its last K.

    Built from `config.encoder_config` alone; the recipe then copies the pretrained weights in, and
    `from_pretrained` finds them in the classifier's own safetensors.
    """

    description = "a transformer encoder"
    pretrained_from = "checkpoint"

    def __init__(self, config: "BiLSTMAttentionConfig"):
        super().__init__()
        # The checkpoint's own dtype ("float32") left out: the encoder is made in the dtype the classifier is
        # loaded in (`from_pretrained(dtype=torch.bfloat16)`), else its float32 states meet a bfloat16 LSTM
        settings = {key: value for key, value in config.encoder_config.items() if key not in ("dtype", "torch_dtype")}
        encoder_config = AutoConfig.for_model(**settings)
        self.model = AutoModel.from_config(encoder_config, dtype=torch.get_default_dtype())
        if getattr(self.model, "pooler", None) is not None:
            # The head pools; an unused pooler would also stall DDP (parameters without gradients).
            self.model.pooler = None
        self.num_mixed = config.encoder_layers
        self.mix = ScalarMix(self.num_mixed) if self.num_mixed > 1 else None
        self.dropout = nn.Dropout(config.embedding_dropout)
        self.output_dim = encoder_config.hidden_size

    @property
    def embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def layer_groups(self) -> list[list[nn.Module]]:
        """Bottom-up groups for freezing: the embedding layer (layer 0), then each block."""
        embeddings = getattr(self.model, "embeddings", None)
        embeddings = embeddings if embeddings is not None else self.model.get_input_embeddings()
        layers = find_layer_list(self.model, self.model.config.num_hidden_layers)
        return [[embeddings]] + [[layer] for layer in layers]

    def default_lora_target_modules(self) -> list[str] | None:
        """query/key/value for the BERT family; None (peft's default for the model type) for others."""
        names = {name.rsplit(".", 1)[-1] for name, _ in self.named_modules()}
        return list(BERT_LORA_TARGETS) if set(BERT_LORA_TARGETS) <= names else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        outputs = self.model(
            input_ids=input_ids, attention_mask=attention_mask.long(), output_hidden_states=self.mix is not None
        )
        if self.mix is None:
            return self.dropout(outputs.last_hidden_state)
        return self.dropout(self.mix(outputs.hidden_states[-self.num_mixed :]))
