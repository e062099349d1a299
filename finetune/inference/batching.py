"""Batches of token ids for prediction, in numpy: the PyTorch path (`finetune.inference.classifier`) and the
onnxruntime one (`finetune.inference.onnx_classifier`) batch and pad texts the same way, without torch here."""

from collections.abc import Iterator

import numpy as np

# A batch holds at most batch_size x this many tokens: 256 reviews of 64 words, 64 of 256 words.
TOKENS_PER_TEXT = 64


def padded_batch(
    rows: list[list[int]], pad_token_id: int, padding_side: str = "right"
) -> tuple[np.ndarray, np.ndarray]:
    """`input_ids` and `attention_mask` (int64) of a batch, padded as `pipeline()` pads it."""
    lengths = np.array([len(ids) for ids in rows])
    positions = np.arange(lengths.max(initial=0))
    mask = positions < lengths[:, None] if padding_side == "right" else positions >= (len(positions) - lengths)[:, None]
    input_ids = np.full(mask.shape, pad_token_id, dtype=np.int64)
    input_ids[mask] = np.fromiter((i for ids in rows for i in ids), dtype=np.int64, count=int(lengths.sum()))
    return input_ids, mask.astype(np.int64)


def length_sorted_batches(lengths: list[int], batch_size: int) -> Iterator[np.ndarray]:
    """Row numbers in batches of similar length: `batch_size` rows, fewer where they are long, so that
    no batch holds more than `batch_size` x TOKENS_PER_TEXT tokens (memory stays flat)."""
    order = np.argsort(lengths, kind="stable")
    sorted_lengths = np.asarray(lengths)[order]
    start, budget = 0, batch_size * TOKENS_PER_TEXT
    while start < len(order):
        # The most rows whose count times the last (longest) one's length fits the budget; at least one.
        low, high = 1, min(batch_size, len(order) - start)
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if middle * sorted_lengths[start + middle - 1] <= budget else (low, middle - 1)
        yield order[start : start + low]
        start += low
