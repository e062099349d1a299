"""Exact and near-duplicate texts, within a split and across splits (leaks), and the labels they disagree on.

Texts are compared after normalisation (NFKC, lower case, no whitespace or punctuation), as sets of
character 3-grams: MinHash signatures in locality-sensitive hashing buckets (datasketch) propose
pairs, and the exact Jaccard similarity of their 3-gram sets confirms them (>= `threshold`).

    pairs = near_duplicate_pairs({"train": train_texts, "test": test_texts}, threshold=0.8)
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

NUM_PERM = 128


def normalized(text: str) -> str:
    """NFKC, lower case, without whitespace, punctuation and symbols: what two copies of a text share."""
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(c for c in text if not unicodedata.category(c).startswith(("Z", "P", "S", "C")))


def shingles(text: str, size: int = 3) -> set[str]:
    """The character `size`-grams of a normalised text (the text itself when shorter)."""
    if len(text) <= size:
        return {text}
    return {text[i : i + size] for i in range(len(text) - size + 1)}


@dataclass(frozen=True)
class Pair:
    """Two rows whose texts are near-duplicates: (split, row index) each, and their Jaccard similarity."""

    first: tuple[str, int]
    second: tuple[str, int]
    similarity: float


def near_duplicate_pairs(splits: dict[str, Sequence[str]], threshold: float = 0.8) -> list[Pair]:
    """Every pair of rows (within or across splits) whose normalised texts have a 3-gram Jaccard similarity
    of at least `threshold` (1.0: the same after normalisation). Empty normalised texts are skipped."""
    from datasketch import MinHash, MinHashLSH

    if not 0 < threshold <= 1:
        raise ValueError(f"near-duplicate threshold {threshold}: between 0 and 1")
    lsh = MinHashLSH(threshold=min(threshold, 0.99) * 0.9, num_perm=NUM_PERM)  # a looser net; Jaccard decides
    grams, pairs = {}, []
    for split, texts in splits.items():
        for row, text in enumerate(texts):
            text = normalized(text)
            if not text:
                continue
            key = (split, row)
            grams[key] = shingles(text)
            signature = MinHash(num_perm=NUM_PERM, seed=1)
            signature.update_batch([gram.encode("utf-8") for gram in grams[key]])
            for other in lsh.query(signature):
                similarity = len(grams[key] & grams[other]) / len(grams[key] | grams[other])
                if similarity >= threshold:
                    pairs.append(Pair(other, key, similarity))
            lsh.insert(key, signature)
    return pairs


def leak_counts(pairs: list[Pair], sizes: dict[str, int], reference: str = "train") -> dict[str, dict]:
    """For each split other than `reference`: how many of its rows have a near-duplicate in `reference`."""
    found = {split: set() for split in sizes if split != reference}
    for pair in pairs:
        for (split, row), (other, _) in ((pair.first, pair.second), (pair.second, pair.first)):
            if split != reference and other == reference:
                found[split].add(row)
    return {
        split: {
            "rows": len(rows),
            "of": sizes[split],
            "share": len(rows) / max(sizes[split], 1),
            "indices": sorted(rows),
        }
        for split, rows in found.items()
    }
