"""The `bilm` encoder: an ELMo-style character biLM pretrained by `recipes/pretrain_bilm.py`.

This file travels to the Hub as custom code: it imports only torch and its sibling files.
"""

from typing import TYPE_CHECKING

import torch
from torch import nn

from .configuration_bilm import BiLMConfig
from .modeling_bilm import BiLMModel, ScalarMix

if TYPE_CHECKING:
    from .configuration_bilstm_attention import BiLSTMAttentionConfig


class BiLMEncoder(nn.Module):
    """ELMo: the biLM's layers (embeddings and each LSTM layer) mixed by learned softmax weights."""

    description = "an ELMo-style character biLM"
    pretrained_from = "checkpoint"

    def __init__(self, config: "BiLSTMAttentionConfig"):
        super().__init__()
        self.bilm = BiLMModel(BiLMConfig(**config.encoder_config))
        self.mix = ScalarMix(self.bilm.config.num_layers + 1)
        self.dropout = nn.Dropout(config.embedding_dropout)
        self.output_dim = 2 * self.bilm.config.projection_size

    @property
    def embeddings(self) -> nn.Module:
        return self.bilm.embeddings

    def layer_groups(self) -> list[list[nn.Module]]:
        return self.bilm.layer_groups()

    def default_lora_target_modules(self) -> list[str]:
        """The character embeddings: peft cannot wrap an `nn.LSTM`."""
        return ["embeddings"]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.mix(self.bilm(input_ids, attention_mask).hidden_states))
