"""The word-vector encoder's vocabulary: which words and characters get a row, and each token's characters."""

from collections import Counter

import torch

# The word-vector tokenizer's own: padding and unknown, ids 0 and 1
SPECIAL_TOKENS = ["[PAD]", "[UNK]"]


def build_vocabulary(counts: Counter, *, min_freq: int, max_size: int, keep: set[str] = frozenset()) -> list[str]:
    """Special tokens, then words and characters by falling frequency.

    A word enters if it was seen `min_freq` times, or at all when it has a pretrained vector (its
    meaning then comes from the vectors, not from the few training examples). The characters of
    words enter likewise, so that a word left out can be read as its characters.

    Args:
        counts: Word frequencies in the training split.
        min_freq: Minimum frequency for a word without a pretrained vector.
        max_size: Most words kept, special tokens not counted.
        keep: Words that have a pretrained vector.
    """
    counts = Counter({word: n for word, n in counts.items() if word not in SPECIAL_TOKENS})
    for word, n in list(counts.items()):
        if len(word) > 1:
            counts.update({char: n for char in word})
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    words = [word for word, n in ranked if (n >= min_freq or word in keep) and word not in SPECIAL_TOKENS]
    return SPECIAL_TOKENS + words[:max_size]


def token_characters(vocab: list[str], max_word_chars: int) -> tuple[list[str], torch.Tensor]:
    """Character vocabulary (index 0: none) and, per token, the ids of its first characters."""
    tokens = [token if token not in SPECIAL_TOKENS else "" for token in vocab]
    chars = [""] + sorted({char for token in tokens for char in token})
    index = {char: i for i, char in enumerate(chars)}
    table = torch.zeros(len(vocab), max_word_chars, dtype=torch.long)
    for row, token in enumerate(tokens):
        ids = [index[char] for char in token[:max_word_chars]]
        table[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return chars, table
