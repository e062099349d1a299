"""A profile of labelled texts: rows per class and split, lengths in words and in model tokens, the share
a model cuts at its max_seq_length, the characters its tokenizer reads as unknown, and the shares of
traditional characters (those OpenCC's t2s table changes) and full-width letters and digits."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

# Full-width ASCII letters and digits (U+FF10-FF19, FF21-FF3A, FF41-FF5A); full-width punctuation is normal Chinese
FULL_WIDTH = {chr(c) for r in ((0xFF10, 0xFF19), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A)) for c in range(r[0], r[1] + 1)}


def class_counts(labels_by_split: dict[str, Sequence], names: list[str]) -> list[dict]:
    """A row per label: its count and share in each split (multi-hot rows count once per label they carry)."""
    rows = []
    counts = {}
    for split, labels in labels_by_split.items():
        labels = np.asarray(labels)
        counts[split] = labels.sum(axis=0) if labels.ndim == 2 else np.bincount(labels, minlength=len(names))
    for i, name in enumerate(names):
        row = {"label": name}
        for split, labels in labels_by_split.items():
            row[split] = int(counts[split][i])
            row[f"{split}_share"] = float(counts[split][i] / max(len(labels), 1))
        rows.append(row)
    return rows


def length_summary(lengths: Sequence[int], max_length: int | None = None) -> dict:
    """Percentiles of `lengths`, and the share over `max_length` (cut when the model reads them)."""
    lengths = np.asarray(lengths)
    if lengths.size == 0:
        return {"texts": 0}
    p50, p90, p99 = np.percentile(lengths, [50, 90, 99])
    summary = {
        "texts": int(lengths.size),
        "mean": float(lengths.mean()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "max": int(lengths.max()),
    }
    if max_length:
        summary.update(max_length=max_length, truncated_share=float((lengths > max_length).mean()))
    return summary


def word_lengths(texts: Sequence[str]) -> list[int]:
    """Words per text, as jieba (rjieba) segments them: what the word-vector encoders read."""
    import rjieba

    return [sum(1 for word in rjieba.cut(text) if not word.isspace()) for text in texts]


def token_lengths(texts: Sequence[str], tokenizer) -> list[int]:
    """Model tokens per text, special tokens included, uncut."""
    ids = tokenizer(list(texts), verbose=False, return_attention_mask=False, return_token_type_ids=False)
    return [len(row) for row in ids["input_ids"]]


def unknown_characters(texts: Sequence[str], tokenizer, top: int = 50) -> tuple[list[tuple[str, int]], float]:
    """The characters `tokenizer` reads as its unknown token, most frequent first (with their counts), and
    the share of all characters they make up. Each distinct character is tokenized alone."""
    counts = Counter(c for text in texts for c in text if not c.isspace())
    unknown_id = getattr(tokenizer, "unk_token_id", None)
    if unknown_id is None or not counts:
        return [], 0.0
    characters = list(counts)
    ids = tokenizer(characters, add_special_tokens=False, verbose=False, return_attention_mask=False)["input_ids"]
    unknown = [c for c, row in zip(characters, ids, strict=True) if unknown_id in row]
    total = sum(counts.values())
    ranked = sorted(((c, counts[c]) for c in unknown), key=lambda item: -item[1])
    return ranked[:top], sum(counts[c] for c in unknown) / total


def script_shares(texts: Sequence[str]) -> dict:
    """Shares of texts holding traditional characters (changed by OpenCC t2s) and full-width letters or digits,
    and of characters of each kind."""
    import opencc

    converter = opencc.OpenCC("t2s")
    characters = traditional = full_width = texts_traditional = texts_full_width = 0
    for text in texts:
        converted = converter.convert(text)
        changed = sum(a != b for a, b in zip(text, converted, strict=False)) if len(converted) == len(text) else 1
        wide = sum(c in FULL_WIDTH for c in text)
        characters += len(text)
        traditional, full_width = traditional + changed, full_width + wide
        texts_traditional, texts_full_width = texts_traditional + (changed > 0), texts_full_width + (wide > 0)
    n = max(len(texts), 1)
    characters = max(characters, 1)
    return {
        "texts_with_traditional": texts_traditional / n,
        "traditional_characters": traditional / characters,
        "texts_with_full_width": texts_full_width / n,
        "full_width_characters": full_width / characters,
    }
