"""`LongText`'s cuts and windows on padded torch batches: index arithmetic, no branch on the data, so the
model's graph exports to ONNX. Beside `long_text.py`, which stays torch-free for the onnxruntime classifier.

This file travels to the Hub as custom code: it imports only torch and its sibling files.
"""

import torch

from .long_text import LongText


def truncate_batch(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, settings: LongText
) -> tuple[torch.Tensor, torch.Tensor]:
    """`LongText.truncate` on a right-padded batch: each text longer than `max_length` keeps its special
    tokens and its head, tail or both. Index arithmetic, no branch on the data: it exports to ONNX."""
    keep = settings.max_length
    if settings.truncation == "head" and settings.suffix == 0:
        return input_ids[:, :keep], attention_mask[:, :keep]  # the first max_length tokens
    positions = torch.arange(input_ids[:, :keep].size(1), device=input_ids.device).unsqueeze(0)
    dropped = (attention_mask.sum(dim=1, keepdim=True) - keep).clamp(min=0)
    source = positions + dropped * (positions >= settings.prefix + settings.head_tokens)
    return input_ids.gather(1, source), attention_mask.gather(1, source)


def window_batch(input_ids: torch.Tensor, attention_mask: torch.Tensor, settings: LongText, pad_token_id: int):
    """`LongText.windows` of every text of a right-padded batch, as one batch of windows.

    Returns:
        The windows' ids and mask (windows, max_length), the text each window belongs to (windows,),
        and where each window token comes from in its text (windows, max_length; -1 on padding).
    """
    lengths = attention_mask.sum(dim=1)
    text_tokens = (lengths - settings.prefix - settings.suffix).clamp(min=0)
    beyond = (text_tokens - settings.content).clamp(min=0)
    counts = (1 + (beyond + settings.step - 1) // settings.step).clamp(max=settings.max_windows)
    starts = torch.arange(int(counts.max()), device=input_ids.device) * settings.step  # (K,)
    spans = (text_tokens.unsqueeze(1) - starts).clamp(min=0, max=settings.content).unsqueeze(-1)  # (B, K, 1)
    j = torch.arange(min(settings.max_length, input_ids.size(1)), device=input_ids.device)  # (W,)
    body_end = settings.prefix + spans
    source = torch.where(j < settings.prefix, j, j + starts.view(1, -1, 1))  # prefix, then the window's text
    after = lengths.view(-1, 1, 1) - settings.suffix + j - body_end  # then the suffix, from the text's end
    source = torch.where(j < body_end, source, after)
    valid = (j < body_end + settings.suffix) & (j < lengths.view(-1, 1, 1))
    source = torch.where(valid, source, -1)
    batch, windows = counts.size(0), starts.size(0)
    ids = input_ids.gather(1, source.clamp(min=0).view(batch, -1)).view(batch, windows, -1)
    ids = ids.masked_fill(~valid, pad_token_id)
    kept = torch.arange(windows, device=input_ids.device) < counts.unsqueeze(1)  # (B, K)
    texts = torch.arange(batch, device=input_ids.device).unsqueeze(1).expand(batch, windows)
    return ids[kept], valid[kept].to(attention_mask.dtype), texts[kept], source[kept]


def aggregate_windows(logits: torch.Tensor, texts: torch.Tensor, batch: int, aggregation: str, problem_type):
    """Each text's logits from its windows': the mean or the per-label max of their probabilities, as
    logits whose softmax (sigmoid for multi-label) gives back those probabilities (`pipeline()` applies it)."""
    multi_label = problem_type == "multi_label_classification" or logits.size(-1) == 1
    if problem_type == "regression":
        scores = logits
    else:
        scores = logits.sigmoid() if multi_label else logits.softmax(dim=-1)
    index = texts.unsqueeze(1).expand_as(scores)
    if aggregation == "max":
        pooled = scores.new_zeros(batch, scores.size(1)).scatter_reduce(0, index, scores, "amax", include_self=False)
        if not multi_label and problem_type != "regression":
            pooled = pooled / pooled.sum(dim=-1, keepdim=True)
    else:
        counts = torch.bincount(texts, minlength=batch).clamp(min=1).unsqueeze(1)
        pooled = scores.new_zeros(batch, scores.size(1)).index_add(0, texts, scores) / counts
    if problem_type == "regression":
        return pooled
    tiny = torch.finfo(pooled.dtype).tiny
    if multi_label:
        return pooled.clamp(min=tiny).log() - (1 - pooled).clamp(min=tiny).log()
    return pooled.clamp(min=tiny).log()
