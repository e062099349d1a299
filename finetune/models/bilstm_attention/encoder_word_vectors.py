"""The `word_vectors` encoder: a table of word vectors, usually initialised from pretrained ones.

This file travels to the Hub as custom code: it imports only torch and its sibling files.
"""

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from .configuration_bilstm_attention import BiLSTMAttentionConfig


class WordVectorEncoder(nn.Module):
    """Token ids -> token vectors: a table usually initialised from pretrained word vectors.

    With `config.char_vocab_size > 0`, each token's vector also gets the mean of learned vectors
    of its characters (the `token_chars` buffer lists them): rare and unseen words share what
    their characters say (差 in 差劲, 太差, 很差), which a word table alone cannot.
    """

    description = "word vectors"
    pretrained_from = "word_vectors"

    def __init__(self, config: "BiLSTMAttentionConfig"):
        super().__init__()
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.pad_token_id)
        self.char_embeddings = None
        if config.char_vocab_size:
            self.char_embeddings = nn.Embedding(config.char_vocab_size, config.embedding_dim, padding_idx=0)
            token_chars = torch.zeros(config.vocab_size, config.max_word_chars, dtype=torch.long)
            self.register_buffer("token_chars", token_chars)
        self.dropout = nn.Dropout(config.embedding_dropout)
        self.word_dropout = config.word_dropout
        self.unk_token_id = config.unk_token_id
        self.output_dim = config.embedding_dim
        if config.freeze_embeddings:
            self.embeddings.weight.requires_grad_(False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.training and self.word_dropout > 0:
            dropped = torch.rand(input_ids.shape, device=input_ids.device) < self.word_dropout
            input_ids = input_ids.masked_fill(dropped & attention_mask, self.unk_token_id)
        vectors = self.embeddings(input_ids)
        if self.char_embeddings is not None:
            chars = self.token_chars[input_ids]
            counts = chars.ne(0).sum(-1, keepdim=True).clamp(min=1)
            vectors = vectors + self.char_embeddings(chars).sum(-2) / counts
        return self.dropout(vectors)

    def layer_groups(self) -> list[list[nn.Module]]:
        """Bottom-up groups for freezing: here only the embeddings (layer 0)."""
        groups = [self.embeddings] + ([self.char_embeddings] if self.char_embeddings is not None else [])
        return [groups]

    def default_lora_target_modules(self) -> list[str]:
        return ["embeddings"]
