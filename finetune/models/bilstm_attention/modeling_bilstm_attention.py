"""BiLSTM + attention classifier over any registered encoder: word vectors, a transformer, a biLM...

The encoder comes from the registry in `encoders.py` (`config.encoder_type`); the head is the same
for all. This file travels to the Hub as custom code: it imports only torch, numpy, transformers and its
sibling files.
"""

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from .configuration_bilstm_attention import BiLSTMAttentionConfig
from .encoders import Encoder, encoder_kind, missing_members
from .long_text import LongText
from .long_text_batches import aggregate_windows, truncate_batch, window_batch
from .modeling_bilm import init_weights, reverse_padded

# Inference on an unsorted batch runs in chunks of texts of similar length; a chunk costs about its longest
# text's length x (its rows + this many): a step of the LSTM has a fixed cost (pipeline() here: 4-8 best).
CHUNK_OVERHEAD_ROWS = 6
# Windows of long texts scored at a time in inference: memory stays bounded whatever the batch.
WINDOW_CHUNK_ROWS = 64


class AdditiveAttentionPooling(nn.Module):
    """`score_t = u . tanh(W h_t + b)`, softmax over real tokens only, weighted sum of `h_t`.

    `u` is the learned context vector of Yang et al. (2016); it is called `context`, not `score`,
    because peft's sequence-classification task trains every module named `score` or `classifier`.
    """

    def __init__(self, input_dim: int, attention_dim: int):
        super().__init__()
        self.projection = nn.Linear(input_dim, attention_dim)
        self.context = nn.Linear(attention_dim, 1, bias=False)

    def forward(self, states: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.context(torch.tanh(self.projection(states))).squeeze(-1)
        if mask is None:  # one text, no padding: every token is real
            weights = torch.softmax(scores, dim=-1)
        else:  # the minimum of the dtype rather than -inf: a text with no tokens at all must not make NaNs
            weights = torch.softmax(scores.masked_fill(~mask, torch.finfo(scores.dtype).min), dim=-1) * mask
        pooled = torch.bmm(weights.unsqueeze(1), states).squeeze(1)
        return pooled, weights


class BiLSTMAttentionHead(nn.Module):
    """BiLSTM (padding never enters the recurrence of real tokens) + attention pooling.

    The backward direction runs over each text reversed within its own length, so padding comes
    after the real tokens in both directions: the states of real tokens are those of packed
    sequences, without packing. Padded batches run in fused kernels (oneDNN on CPUs, cuDNN on
    GPUs): on this project's 2-core CPU, forward + backward of a batch of 64 reviews took 2.7x less
    time than over packed sequences (120 tokens; 1.7x at 30), and the graph exports to ONNX.
    The weights are those of one bidirectional `nn.LSTM` (`self.lstm`), as before.
    """

    def __init__(self, config: BiLSTMAttentionConfig, input_dim: int):
        super().__init__()
        self.lstm = nn.LSTM(
            input_dim,
            config.lstm_hidden_size,
            num_layers=config.lstm_num_layers,
            dropout=config.lstm_dropout if config.lstm_num_layers > 1 else 0.0,
            bidirectional=True,
            batch_first=True,
        )
        self.attention = AdditiveAttentionPooling(2 * config.lstm_hidden_size, config.attention_dim)
        self.pooling = config.pooling
        extra = {"attention": 0, "attention+max": 2 * config.lstm_hidden_size, "attention+mean": input_dim}
        self.output_dim = 2 * config.lstm_hidden_size + extra[config.pooling]

    def bilstm(self, inputs: torch.Tensor, lengths: torch.Tensor, unpadded: bool | None = None) -> torch.Tensor:
        """`self.lstm`'s output at every real token, each direction a padded unidirectional LSTM (`unpadded`: known)."""
        lstm = self.lstm
        if unpadded is None:
            unpadded = self._one_unpadded_text(inputs, lengths)
        if unpadded:
            # Nothing to keep out of the backward direction: nn.LSTM's own bidirectional kernel, one fused
            # call instead of two and the reversals (a 35-token text: 0.85 vs 1.06 ms, 1 thread)
            return lstm(inputs)[0]
        for layer in range(lstm.num_layers):
            if layer > 0:  # nn.LSTM's dropout between layers
                inputs = nn.functional.dropout(inputs, lstm.dropout, self.training)
            directions = []
            for suffix in ("", "_reverse"):
                weights = [
                    getattr(lstm, f"{name}_l{layer}{suffix}")
                    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                ]
                start = inputs.new_zeros(1, inputs.size(0), lstm.hidden_size)
                sequence = reverse_padded(inputs, lengths) if suffix else inputs
                states = torch._VF.lstm(sequence, (start, start), weights, True, 1, 0.0, self.training, False, True)[0]
                directions.append(reverse_padded(states, lengths) if suffix else states)
            inputs = torch.cat(directions, dim=-1)
        return inputs

    def _one_unpadded_text(self, inputs: torch.Tensor, lengths: torch.Tensor) -> bool:
        """Inference on one text without padding (pipeline()'s single texts), on the CPU (the check reads
        the length: a device sync elsewhere), outside an ONNX export (whose graph takes any batch)."""
        if self.training or inputs.size(0) != 1 or inputs.device.type != "cpu" or torch.jit.is_tracing():
            return False
        return not torch.onnx.is_in_onnx_export() and int(lengths[0]) == inputs.size(1)

    def forward(self, token_states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = mask.sum(dim=1)
        unpadded = self._one_unpadded_text(token_states, lengths)
        states = self.bilstm(token_states, lengths, unpadded)
        pooled, weights = self.attention(states, None if unpadded else mask)
        if self.pooling == "attention+max":
            # Max over real tokens only; an empty text pools to zeros.
            peaks = states.masked_fill(~mask.unsqueeze(-1), torch.finfo(states.dtype).min).amax(dim=1)
            pooled = torch.cat([pooled, peaks.masked_fill(~mask.any(1, keepdim=True), 0.0)], dim=-1)
        elif self.pooling == "attention+mean":
            # The mean of the token vectors: a bag-of-words path (as fastText) for short texts with one telling
            # word. After the LSTM: before it, gradients add up in another order (make demo 0.8612 -> 0.8606).
            counts = mask.sum(1, keepdim=True).clamp(min=1)
            pooled = torch.cat([pooled, (token_states * mask.unsqueeze(-1)).sum(1) / counts], dim=-1)
        return pooled, weights


def build_encoder(config: BiLSTMAttentionConfig) -> Encoder:
    """The encoder registered for `config.encoder_type`, built from the config."""
    encoder = encoder_kind(config.encoder_type).encoder_class(config)
    missing = missing_members(encoder)
    if missing:
        raise TypeError(f"{type(encoder).__name__} is no Encoder: it lacks {', '.join(missing)}")
    return encoder


def length_chunks(lengths: torch.Tensor, overhead_rows: int = CHUNK_OVERHEAD_ROWS) -> list[torch.Tensor]:
    """A batch's row indices in chunks of similar length, shortest first: of the partitions of the
    length-sorted rows into runs, the one of least padded work, a chunk costing its longest text's length x
    (its rows + `overhead_rows`). Dynamic programming over the sorted lengths (O(rows^2), in numpy)."""
    order = lengths.argsort()
    ordered = lengths[order].cpu().numpy().astype(np.float64)
    rows = len(ordered)
    best, start = np.zeros(rows + 1), np.zeros(rows + 1, dtype=np.int64)
    for end in range(1, rows + 1):  # best[end]: the least cost of the first `end` rows; the last chunk start..end
        costs = best[:end] + ordered[end - 1] * (end - np.arange(end) + overhead_rows)
        start[end] = costs.argmin()
        best[end] = costs[start[end]]
    bounds, end = [], rows
    while end > 0:
        bounds.append(end)
        end = int(start[end])
    edges = [0, *reversed(bounds)]
    return [order[a:b] for a, b in zip(edges[:-1], edges[1:])]


class TfidfBranch(nn.Module):
    """Logistic regression over character n-gram TF-IDF features (`tfidf_ngrams.py`): the weights of
    n-gram i are row i of `weight` (row 0, the padding, is zero). Fitted outside, not trained here."""

    def __init__(self, num_ngrams: int, num_labels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_ngrams + 1, num_labels), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(num_labels), requires_grad=False)

    def forward(self, ngram_ids: torch.Tensor, ngram_weights: torch.Tensor) -> torch.Tensor:
        features = self.weight[ngram_ids]  # (batch, n-grams, labels)
        return torch.bmm(ngram_weights.to(features.dtype).unsqueeze(1), features).squeeze(1) + self.bias


def mix_probabilities(
    logits: torch.Tensor, branch_logits: torch.Tensor, weight: float, multi_label: bool = False
) -> torch.Tensor:
    """Logits whose softmax is `(1 - weight) * softmax(logits) + weight * softmax(branch_logits)`; `multi_label`:
    whose sigmoid is that mixture of each label's sigmoids (one-vs-rest branch)."""
    if multi_label:
        mixed = (1 - weight) * logits.float().sigmoid() + weight * branch_logits.float().sigmoid()
        tiny = torch.finfo(mixed.dtype).tiny
        return (mixed.clamp(min=tiny).log() - (1 - mixed).clamp(min=tiny).log()).to(logits.dtype)
    mixed = (1 - weight) * logits.float().softmax(-1) + weight * branch_logits.float().softmax(-1)
    return mixed.clamp(min=torch.finfo(mixed.dtype).tiny).log().to(logits.dtype)


class BiLSTMAttentionPreTrainedModel(PreTrainedModel):
    config_class = BiLSTMAttentionConfig
    base_model_prefix = "bilstm_attention"
    main_input_name = "input_ids"
    # Loaded in bfloat16 (`dtype=torch.bfloat16`), the TF-IDF branch's weights stay float32: cheap, and its
    # logistic regression's margins are often small.
    _keep_in_fp32_modules_strict = ["tfidf_branch"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        init_weights(module, self.config.initializer_range)


class BiLSTMAttentionForSequenceClassification(BiLSTMAttentionPreTrainedModel):
    """Encoder -> BiLSTM -> masked additive attention pooling -> dropout -> `classifier`.

    With `output_attentions=True`, `outputs.attentions` is a one-element tuple holding the pooling
    weights, shape (batch, time): how much each token contributed to the prediction (zero on
    padding). They are left out otherwise: `pipeline()` would slice them for every text.
    """

    def __init__(self, config: BiLSTMAttentionConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.encoder = build_encoder(config)
        self.head = BiLSTMAttentionHead(config, self.encoder.output_dim)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(self.head.output_dim, config.num_labels)
        self.tfidf_branch = TfidfBranch(config.tfidf_num_ngrams, config.num_labels) if config.tfidf_num_ngrams else None
        self.post_init()

    def attach_tfidf_branch(self, weight: torch.Tensor, bias: torch.Tensor, mix_weight: float) -> None:
        """Adds (or replaces) the TF-IDF branch: `weight` (n-grams, labels) and `bias` of a fitted
        logistic regression (multi-label: one-vs-rest), its probabilities mixed in with share `mix_weight`."""
        if self.config.problem_type == "regression" or self.num_labels < 2:
            raise ValueError(f"a TF-IDF branch needs classification, not {self.config.problem_type}")
        branch = TfidfBranch(weight.size(0), self.num_labels).to(self.classifier.weight.device)
        branch.weight.data[1:] = weight.to(branch.weight)
        branch.bias.data[:] = bias.to(branch.bias)
        self.tfidf_branch = branch
        self.config.tfidf_num_ngrams, self.config.tfidf_mix_weight = weight.size(0), float(mix_weight)

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.embeddings

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        ngram_ids: torch.Tensor | None = None,
        ngram_weights: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple:
        if self.tfidf_branch is not None:
            if ngram_ids is None or ngram_weights is None:
                raise ValueError(
                    "this model has a TF-IDF branch: pass ngram_ids and ngram_weights, as its tokenizer gives them "
                    "(it needs tfidf_ngrams.json)"
                )
        # The TF-IDF branch first: small operations, quicker before the LSTM (which leaves the caches cold)
        branch = self.tfidf_branch(ngram_ids, ngram_weights) if self.tfidf_branch is not None else None
        if attention_mask is None:
            attention_mask = input_ids.ne(self.config.pad_token_id)
        # A tokenizer called without truncation (pipeline() does so) must not overrun the positions
        # a transformer encoder has: the model cuts long texts itself (or scores their windows), as
        # config.json says, so that pipeline() and a Hub user see what training and evaluation saw.
        settings = LongText.of(self.config)
        if settings.mode == "windows" and input_ids.size(1) > settings.max_length:
            return self._window_forward(
                input_ids, attention_mask, labels, output_attentions, return_dict, settings, branch
            )
        input_ids, attention_mask = truncate_batch(input_ids, attention_mask, settings)
        if input_ids.size(1) == 0:
            # A batch of empty texts: give the LSTM one masked padding step to run over.
            input_ids = input_ids.new_full((input_ids.size(0), 1), self.config.pad_token_id)
            attention_mask = attention_mask.new_zeros((input_ids.size(0), 1))
        mask = attention_mask.bool()
        if self._sort_by_length(mask):
            logits, weights = self._scores_by_length(input_ids, mask)
        else:
            logits, weights = self._scores(input_ids, mask)
        return self._output(logits, weights, labels, output_attentions, return_dict, branch)

    def _output(self, logits, weights, labels, output_attentions, return_dict, branch) -> SequenceClassifierOutput:
        if branch is not None:  # the TF-IDF branch's logits of each text
            multi_label = self.config.problem_type == "multi_label_classification"
            logits = mix_probabilities(logits, branch, self.config.tfidf_mix_weight, multi_label)
        loss = None if labels is None else self.compute_loss(logits, labels)
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        attentions = (weights,) if output_attentions else None
        if return_dict is False:
            return tuple(x for x in (loss, logits, attentions) if x is not None)
        return SequenceClassifierOutput(loss=loss, logits=logits, attentions=attentions)

    def _window_forward(self, input_ids, attention_mask, labels, output_attentions, return_dict, settings, branch):
        """Texts longer than a window: every window scored, the scores aggregated per text
        (`aggregate_windows`); the attention weights of overlapping windows are averaged onto the text."""
        ids, mask, texts, source = window_batch(input_ids, attention_mask, settings, self.config.pad_token_id)
        chunk = ids.size(0) if torch.is_grad_enabled() else WINDOW_CHUNK_ROWS
        logits, weights = [], []
        for rows in torch.arange(ids.size(0), device=ids.device).split(chunk):
            chunk_mask = mask[rows].bool()
            if self._sort_by_length(chunk_mask):
                chunk_logits, chunk_weights = self._scores_by_length(ids[rows], chunk_mask)
            else:
                chunk_logits, chunk_weights = self._scores(ids[rows], chunk_mask)
            logits.append(chunk_logits)
            weights.append(chunk_weights)
        logits, weights = torch.cat(logits), torch.cat(weights)
        batch = input_ids.size(0)
        text_logits = aggregate_windows(logits, texts, batch, settings.aggregation, self.config.problem_type)
        on_text = weights.new_zeros(batch, input_ids.size(1) + 1)  # the last column takes the padding
        rows = texts.unsqueeze(1).expand_as(source)
        on_text.index_put_((rows, source.where(source >= 0, input_ids.size(1))), weights, accumulate=True)
        windows_per_text = torch.bincount(texts, minlength=batch).clamp(min=1).unsqueeze(1)
        weights = on_text[:, :-1] / windows_per_text
        return self._output(text_logits, weights, labels, output_attentions, return_dict, branch)

    def _scores(self, input_ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and attention weights of a padded batch."""
        pooled, weights = self.head(self.encoder(input_ids, mask), mask)
        return self.classifier(self.dropout(pooled)), weights

    def _sort_by_length(self, mask: torch.Tensor) -> bool:
        """Inference on a batch of texts of mixed lengths, padded on the right (`pipeline()` batches texts
        in the order given): run it in chunks of similar length instead, each cut to its own longest text.
        The padded LSTM would otherwise run over every padding step. Never while training or exporting
        (shapes there depend on the data)."""
        if self.training or torch.is_grad_enabled() or mask.size(0) < 2:
            return False
        if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export():
            return False
        lengths = mask.sum(dim=1)
        right_padded = bool(mask.eq(torch.arange(mask.size(1), device=mask.device) < lengths.unsqueeze(1)).all())
        return right_padded and int(lengths.sum()) < 0.75 * mask.numel()

    def _scores_by_length(self, input_ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`_scores` over chunks of similar length (`length_chunks`): the same numbers (padding never reaches
        a real token's state), in the batch's order."""
        lengths = mask.sum(dim=1)
        logits = weights = None
        for rows in length_chunks(lengths):
            width = max(int(lengths[rows].max()), 1)
            chunk_logits, chunk_weights = self._scores(input_ids[rows, :width], mask[rows, :width])
            if logits is None:
                logits = chunk_logits.new_empty(mask.size(0), chunk_logits.size(1))
                weights = chunk_weights.new_zeros(mask.shape)
            logits[rows], weights[rows, :width] = chunk_logits, chunk_weights
        return logits, weights

    def compute_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss BERT picks for `config.problem_type`, inferring it from the labels when unset."""
        if self.config.problem_type is None:
            if self.num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        if self.config.problem_type == "regression":
            return nn.functional.mse_loss(logits.squeeze(-1), labels.float())
        if self.config.problem_type == "single_label_classification":
            return nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return nn.functional.binary_cross_entropy_with_logits(logits, labels.float())
