"""Pretrained word vectors: stream them from word2vec/fastText/Tencent files.

Chinese vector releases are large (Tencent AI Lab's file holds millions of 200-dimensional vectors,
over 10 GB of text) while a classifier's vocabulary holds tens of thousands of words, so
`read_word_vectors` streams the file and keeps only the words it is asked for (the formats
themselves are parsed in `finetune.vectors.formats`). The embedding matrix and coverage report are
built from them in `finetune.vectors.embeddings`::

    matrix, report = load_word_vectors("sgns.weibo.word.bz2", tokenizer.get_vocab(),
                                       token_counts=counts)
    model.embeddings.weight.data.copy_(torch.from_numpy(matrix))
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from finetune.vectors.cache import cache_enabled, cache_entry
from finetune.vectors.formats import FASTTEXT_MAGIC, VectorFileError, read_vector_file

# FASTTEXT_MAGIC and VectorFileError live with the readers (finetune.vectors.formats); imported from here too
__all__ = ["FASTTEXT_MAGIC", "VectorFileError", "WordVectors", "read_word_vectors"]

logger = logging.getLogger(__name__)


@dataclass
class WordVectors:
    """Word vectors kept from a file.

    Attributes:
        words: The words, in file order.
        vectors: float32 array of shape (len(words), dim); row i is the vector of `words[i]`.
    """

    words: list[str]
    vectors: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.words)


def _log_reading(path: Path, wanted: set[str] | None, cacheable: bool) -> None:
    """The line before a read of the file itself: a large file takes minutes (a bar follows if it lasts 2 s)."""
    try:
        size = tqdm.format_sizeof(os.path.getsize(path), "B", 1024)  # as the bar counts: 11.8kB, 12.3GB
    except OSError:  # the reader reports a missing file
        return
    keeping = "every word" if wanted is None else f"{len(wanted):,} wanted words"
    cache = "; not in the vector cache yet" if cacheable else ""
    logger.info("reading %s (%s) for %s%s", path, size, keeping, cache)


def read_word_vectors(
    path: str | os.PathLike, wanted: Iterable[str] | None = None, *, cache: bool | None = None
) -> WordVectors:
    """Streams a word2vec-format file and keeps the vectors of the wanted words.

    Memory grows with the number of kept words, not with the file. Formats, told apart by name:
    `.bin` is word2vec binary, anything else word2vec text with a "count dim" header (fastText
    `.vec`, Tencent AI Lab, Chinese-Word-Vectors `sgns.*`) or without one (GloVe); a `.gz` or
    `.bz2` suffix is decompressed on the fly. Text is UTF-8 (a BOM is accepted). A name that does
    not match the content (gzip data without `.gz`, binary named `.txt`, text named `.bin`...) is
    an error that says how to name the file.

    Lines of unwanted words are skipped without parsing their values, so a malformed or NaN value
    there goes unnoticed; a line with too few values is reported wherever it is. A line with too
    many values cannot be told from a word containing spaces, and reads as an (unwanted) longer word.

    A read of the file logs a line first and, where INFO lines are logged (the main process), shows a
    bar over the bytes read once it has lasted 2 s (`formats.PROGRESS_DELAY_SECONDS`); a read from the
    cache logs one line.

    Args:
        path: The vector file.
        wanted: Words to keep; None keeps every word.
        cache: Whether to reuse and store the kept vectors in the cache of `finetune.vectors.cache`,
            keyed by the file's identity (path, size, mtime, ctime, inode) and the wanted words: a
            second read of an unchanged file for the same words does not open it, and returns the
            same words, order and values. None: on, unless FINETUNE_VECTOR_CACHE=0. Reads of every
            word (`wanted` None) are never cached: the entry would be as large as the file.

    Returns:
        The kept words in file order with their float32 vectors. A word listed twice keeps its
        first vector (a warning counts the duplicates; a read from the cache logs it again).

    Raises:
        VectorFileError: The file is empty, misnamed, malformed or holds a NaN or infinite value
            in a kept vector (the message names the file and the 1-based line or entry number),
            or it is a fastText model rather than word vectors.
    """
    path = Path(path)
    wanted = None if wanted is None else set(wanted)
    entry = cache_entry(path, wanted) if wanted is not None and cache_enabled(cache) else None
    started = time.perf_counter()
    cached = entry.load() if entry is not None else None
    if not cached:
        _log_reading(path, wanted, cacheable=entry is not None)
    # The bar goes where the log lines go: the main process's stderr (the others log warnings only)
    words, vectors, info = cached or read_vector_file(path, wanted, progress=logger.isEnabledFor(logging.INFO))
    seconds = time.perf_counter() - started
    for warning in info["warnings"]:
        logger.warning("%s", warning)
    kept = (
        f"{info.get('format', 'word2vec')}, dimension {info['dim']}, {info['entries']} entries, kept {len(words)} words"
    )
    if cached:
        logger.info(
            "read %s from the cache in %.2fs (%.1fs from the file): %s; cache entry %s",
            path, seconds, info["seconds"], kept, entry.file,
        )  # fmt: skip
    else:
        logger.info("read %s in %.1fs: %s", path, seconds, kept)
        if entry is not None:
            entry.store(words, vectors, {**info, "seconds": seconds})
    return WordVectors(words=words, vectors=vectors)
