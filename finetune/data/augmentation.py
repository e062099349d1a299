"""The transfer set's augmentation for distillation (Tang et al. 2019, "Distilling Task-Specific
Knowledge from BERT into Simple Neural Networks", section 3.3).

Each copy of a text goes word by word: with chance `p_mask` a word becomes `[UNK]`, else with
chance `p_pos` another word of the same part of speech (drawn from the training texts' words of
that tag, as often as they occur there); then, with chance `p_ng`, the copy is cut to a random
n-gram of 1 to 5 words. Copies equal to the text or to another copy are dropped. Words and tags
come from `rjieba.tag` (jieba's dictionary and tag set; 0.012 s for 2,000 short reviews here,
jieba.posseg 2.2 s after loading its dictionary). Each text's copies are drawn from a generator
seeded by (seed, the text's number): the same whatever the process or the order.
"""

from __future__ import annotations

import random
from collections import defaultdict

MASK = "[UNK]"
MAX_NGRAM = 5


def tag_words(texts: list[str]) -> list[list[tuple[str, str]]]:
    """(word, part of speech) of each text, in jieba's tag set (n, v, a, ...; x for punctuation)."""
    import rjieba

    return [rjieba.tag(text) for text in texts]


class TransferAugmenter:
    """Draws augmented copies of tagged texts.

    Args:
        tagged: The training texts as `tag_words` gives them: the words a part of speech is replaced by.
        p_mask: Chance of each word becoming `[UNK]`.
        p_pos: Chance of each word becoming another of its part of speech.
        p_ng: Chance of a copy being cut to an n-gram of 1 to `MAX_NGRAM` words.
        seed: Seed of every draw.
    """

    def __init__(self, tagged: list[list[tuple[str, str]]], p_mask: float, p_pos: float, p_ng: float, seed: int):
        self.p_mask, self.p_pos, self.p_ng, self.seed = p_mask, p_pos, p_ng, seed
        by_tag = defaultdict(list)
        for text in tagged:
            for word, tag in text:
                if not word.isspace():
                    by_tag[tag].append(word)
        self.words_by_tag = dict(by_tag)

    def augment(self, words: list[tuple[str, str]], rng: random.Random) -> list[str]:
        """One copy of a tagged text, as its words."""
        copy = []
        for word, tag in words:
            draw = rng.random()
            if word.isspace():
                copy.append(word)
            elif draw < self.p_mask:
                copy.append(MASK)
            elif draw < self.p_mask + self.p_pos and tag in self.words_by_tag:
                copy.append(rng.choice(self.words_by_tag[tag]))
            else:
                copy.append(word)
        if copy and rng.random() < self.p_ng:
            n = rng.randint(1, MAX_NGRAM)
            start = rng.randint(0, max(len(copy) - n, 0))
            copy = copy[start : start + n]
        return copy

    def copies(self, words: list[tuple[str, str]], n: int, index: int) -> list[str]:
        """Up to `n` distinct copies (texts) of the `index`-th text, none equal to it."""
        rng = random.Random(f"{self.seed}:{index}")
        original = "".join(word for word, _ in words)
        texts = []
        for _ in range(n):
            text = "".join(self.augment(words, rng))
            if text.strip() and text != original and text not in texts:
                texts.append(text)
        return texts


def augment_texts(texts: list[str], copies: int, p_mask: float, p_pos: float, p_ng: float, seed: int) -> list[str]:
    """`copies` augmented copies of each text (fewer where draws repeat), in the texts' order.

    Args:
        texts: The labelled training texts (their words also feed the same-POS replacement).
        copies: Copies drawn per text.
        p_mask, p_pos, p_ng: See `TransferAugmenter`.
        seed: Seed of every draw.
    """
    if copies == 0:
        return []
    tagged = tag_words(texts)
    augmenter = TransferAugmenter(tagged, p_mask, p_pos, p_ng, seed)
    return [copy for index, words in enumerate(tagged) for copy in augmenter.copies(words, copies, index)]
