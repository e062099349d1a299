"""ELMo-style bidirectional LSTM language model over characters, and ELMo's scalar mix.

This file travels to the Hub as custom code: it imports only torch, transformers and its
sibling files.
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_bilm import BiLMConfig


@dataclass
class BiLMOutput(ModelOutput):
    """`hidden_states`: layer 0 (the embeddings, seen by both directions) then each LSTM layer,
    each `(batch, time, 2 * projection_size)`: forward states, then backward states."""

    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class BiLMLanguageModelingOutput(ModelOutput):
    """`loss` is the mean of the forward and the backward loss; exp of each is its perplexity."""

    loss: torch.Tensor | None = None
    forward_loss: torch.Tensor | None = None
    backward_loss: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


def reverse_padded(sequences: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverses each sequence within its own length; padding stays where it is.

    Rows of the flattened (batch x time) tensor picked by `index_select`: each a contiguous copy, where
    `gather` over an index expanded to every feature took 3x (float32) to 9x (bfloat16) longer on a
    (64, 40, 200) batch here."""
    batch, steps = sequences.shape[:2]
    time = torch.arange(steps, device=sequences.device).unsqueeze(0)
    index = torch.where(time < lengths.unsqueeze(1), lengths.unsqueeze(1) - 1 - time, time)
    rows = index + steps * torch.arange(batch, device=sequences.device).unsqueeze(1)
    return sequences.reshape(batch * steps, *sequences.shape[2:]).index_select(0, rows.view(-1)).view_as(sequences)


class DirectionalLSTM(nn.Module):
    """A stack of LSTMs with projections reading one way, residual connections from layer 2 up."""

    def __init__(self, config: BiLMConfig):
        super().__init__()
        size = config.projection_size
        self.layers = nn.ModuleList(
            nn.LSTM(size, config.hidden_size, proj_size=size, batch_first=True) for _ in range(config.num_layers)
        )
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """Each layer's states, zero at padding. Padded, not packed, as the classifier's BiLSTM runs:
        padding comes after every text's real tokens (the backward stack reads texts reversed within
        their lengths, `reverse_padded`), so it never reaches their states; no lengths on the CPU,
        and the graph exports to ONNX."""
        steps = torch.arange(inputs.size(1), device=inputs.device)
        # An empty text runs one step, as it did packed (length clamped to 1).
        real = (steps < lengths.clamp(min=1).unsqueeze(1)).unsqueeze(-1).to(inputs.dtype)
        outputs, states = [], inputs
        for i, lstm in enumerate(self.layers):
            layer_states = run_lstm(lstm, self.dropout(states))
            if i > 0:
                layer_states = layer_states + states
            states = layer_states * real
            outputs.append(states)
        return outputs


def run_lstm(lstm: nn.LSTM, inputs: torch.Tensor) -> torch.Tensor:
    """`lstm(inputs)[0]`. ONNX's LSTM has no projection: under export, the projected LSTM runs as the
    plain LSTM it equals (`h = W_hr m`, so `W_hh h = (W_hh W_hr) m`) and its output is projected."""
    if not (lstm.proj_size and torch.onnx.is_in_onnx_export()):
        return lstm(inputs)[0]
    weights = [lstm.weight_ih_l0, lstm.weight_hh_l0 @ lstm.weight_hr_l0, lstm.bias_ih_l0, lstm.bias_hh_l0]
    start = inputs.new_zeros(1, inputs.size(0), lstm.hidden_size)
    states = torch._VF.lstm(inputs, (start, start), weights, True, 1, 0.0, False, False, True)[0]
    return states @ lstm.weight_hr_l0.T


@torch.no_grad()
def init_weights(module: nn.Module, std: float) -> None:
    """Xavier for linear layers, N(0, std) for embeddings (zero padding row), orthogonal LSTM
    weights with forget-gate bias 1 (the usual trick that lets gradients flow early in training)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.padding_idx is not None:
            module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LSTM):
        for name, param in module.named_parameters():
            if "bias" in name:
                nn.init.zeros_(param)
                param[module.hidden_size : 2 * module.hidden_size].fill_(1.0)
            else:
                nn.init.orthogonal_(param)


class BiLMPreTrainedModel(PreTrainedModel):
    config_class = BiLMConfig
    base_model_prefix = "bilm"
    main_input_name = "input_ids"

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # PyTorch's LSTM initialisation, not the classifier's orthogonal one with forget-gate bias:
        # cross-entropy 6.15 vs 6.41 after 100 steps on the embedded corpus (both with unit-scale
        # character vectors; see BiLMConfig.initializer_range).
        if isinstance(module, nn.LSTM):
            module.reset_parameters()
        else:
            init_weights(module, self.config.initializer_range)


class BiLMModel(BiLMPreTrainedModel):
    """Character embeddings -> a forward and a backward LSTM stack; returns every layer's states."""

    def __init__(self, config: BiLMConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.projection_size, padding_idx=config.pad_token_id)
        self.forward_lstm = DirectionalLSTM(config)
        self.backward_lstm = DirectionalLSTM(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embeddings = value

    def layer_groups(self) -> list[list[nn.Module]]:
        """Bottom-up groups for freezing: the embeddings (layer 0), then each layer of both directions."""
        pairs = zip(self.forward_lstm.layers, self.backward_lstm.layers)
        return [[self.embeddings]] + [[forward, backward] for forward, backward in pairs]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> BiLMOutput:
        if attention_mask is None:
            attention_mask = input_ids.ne(self.config.pad_token_id)
        lengths = attention_mask.sum(1)
        embedded = self.embeddings(input_ids)
        forward_states = self.forward_lstm(embedded, lengths)
        backward_states = [
            reverse_padded(states, lengths) for states in self.backward_lstm(reverse_padded(embedded, lengths), lengths)
        ]
        hidden_states = (torch.cat([embedded, embedded], dim=-1),) + tuple(
            torch.cat(pair, dim=-1) for pair in zip(forward_states, backward_states)
        )
        return BiLMOutput(last_hidden_state=hidden_states[-1], hidden_states=hidden_states)


class BiLMForLanguageModeling(BiLMPreTrainedModel):
    """The biLM with a softmax shared by both directions: forward states predict the next
    character, backward states the previous one (ELMo's objective)."""

    def __init__(self, config: BiLMConfig):
        super().__init__(config)
        self.bilm = BiLMModel(config)
        self.lm_head = nn.Linear(config.projection_size, config.vocab_size)
        self.post_init()

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> BiLMLanguageModelingOutput:
        if attention_mask is None:
            attention_mask = input_ids.ne(self.config.pad_token_id)
        outputs = self.bilm(input_ids, attention_mask)
        top, size = outputs.hidden_states[-1], self.config.projection_size
        mask = attention_mask.bool()
        pairs = mask[:, 1:] & mask[:, :-1]  # (t, t+1) both real characters
        forward_loss = nn.functional.cross_entropy(self.lm_head(top[:, :-1, :size][pairs]), input_ids[:, 1:][pairs])
        backward_loss = nn.functional.cross_entropy(self.lm_head(top[:, 1:, size:][pairs]), input_ids[:, :-1][pairs])
        return BiLMLanguageModelingOutput(
            loss=(forward_loss + backward_loss) / 2,
            forward_loss=forward_loss,
            backward_loss=backward_loss,
            hidden_states=outputs.hidden_states,
        )


class ScalarMix(nn.Module):
    """ELMo's mix of layers: `gamma * sum_k softmax(w)_k * layer_k`, with learned `w` and `gamma`."""

    def __init__(self, num_layers: int):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_layers))
        self.gamma = nn.Parameter(torch.ones(()))

    def forward(self, layers: tuple[torch.Tensor, ...] | list[torch.Tensor]) -> torch.Tensor:
        weights = torch.softmax(self.weights, dim=0)
        return self.gamma * sum(w * layer for w, layer in zip(weights, layers))
