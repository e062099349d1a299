"""Pretrained word vectors: stream them from word2vec/fastText/Tencent files.

Chinese vector releases are large (Tencent AI Lab's file holds millions of 200-dimensional vectors,
over 10 GB of text) while a classifier's vocabulary holds tens of thousands of words, so
`read_word_vectors` streams the file and keeps only the words it is asked for. The embedding
matrix and coverage report are built from them in `finetune.embeddings`::

    matrix, report = load_word_vectors("sgns.weibo.word.bz2", tokenizer.get_vocab(),
                                       token_counts=counts)
    model.embeddings.weight.data.copy_(torch.from_numpy(matrix))
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

logger = logging.getLogger(__name__)

# fastText's `.bin` *model* files start with this int32; its word vectors ship as a `.vec` file.
FASTTEXT_MAGIC = 793712314
_READ_CHUNK_BYTES = 1 << 20


class VectorFileError(ValueError):
    """A word-vector file is malformed; the message names the file and the line or entry."""


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


# ##### Reading files #####


class _Collector:
    """Keeps the wanted vectors (first occurrence wins) while a reader walks a file."""

    def __init__(self, wanted: Iterable[str] | None):
        self.wanted = None if wanted is None else set(wanted)
        self.rows: dict[str, np.ndarray] = {}  # dicts keep insertion order, i.e. file order
        self.duplicates = 0
        if self.wanted is not None:
            encoded = [word.encode("utf-8") for word in self.wanted]
            self._wanted_bytes = set(encoded)
            # A text line is only split in full when its first token could start a wanted word;
            # words with spaces in them (a few Tencent phrases) are matched by their first token.
            self._wanted_first_tokens = {(w.split(None, 1) or [w])[0] for w in encoded}

    def may_want_binary(self, word: bytes) -> bool:
        return self.wanted is None or word in self._wanted_bytes

    def may_want_text(self, first_token: bytes) -> bool:
        return self.wanted is None or first_token in self._wanted_first_tokens

    def offer(self, word: str, vector: np.ndarray) -> None:
        if self.wanted is not None and word not in self.wanted:
            return
        if word in self.rows:
            self.duplicates += 1
        else:
            self.rows[word] = vector


def _open_compressed(path: Path) -> BinaryIO:
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".bz2"):
        return bz2.open(path, "rb")
    return open(path, "rb")


def _is_word2vec_binary(path: Path) -> bool:
    name = path.name.lower().removesuffix(".gz").removesuffix(".bz2")
    return name.endswith(".bin")


def _check_not_fasttext_model(path: Path) -> None:
    with _open_compressed(path) as stream:
        head = stream.read(4)
    if len(head) == 4 and int.from_bytes(head, "little") == FASTTEXT_MAGIC:
        raise VectorFileError(
            f"{path} is a fastText model, not word vectors in word2vec format; "
            "use the .vec file that fastText ships next to the .bin (same vectors, as text)"
        )


def _decode(raw: bytes, path: Path, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise VectorFileError(f"{path}: {where}: bytes {raw[err.start : err.end]!r} are not valid UTF-8") from None


def _parse_text_line(line: bytes, dim: int, path: Path, line_no: int) -> tuple[str, np.ndarray]:
    # Split from the right: the last `dim` fields are numbers, the rest (spaces included) the word.
    fields = _decode(line, path, f"line {line_no}").rsplit(None, dim)
    if len(fields) != dim + 1:
        raise VectorFileError(f"{path}: line {line_no} has {len(fields) - 1} values, expected {dim}")
    try:
        return fields[0], np.array(fields[1:], dtype=np.float32)
    except ValueError as err:  # numpy names the value: "could not convert string to float: 'x'"
        raise VectorFileError(f"{path}: line {line_no}: {err}") from None


def _read_text(stream: BinaryIO, path: Path, collector: _Collector) -> tuple[int, int]:
    """Reads word2vec text with or without a "count dim" header; returns (dim, entries)."""
    dim = header_count = None
    check_first_vector = False
    entries = 0
    for line_no, raw in enumerate(stream, start=1):
        if line_no == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        line = raw.rstrip()  # trailing spaces (Chinese-Word-Vectors), "\r\n"
        if not line:
            continue
        if dim is None:
            fields = line.split()
            if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
                header_count, dim = int(fields[0]), int(fields[1])
                check_first_vector = True
                continue
            dim = len(fields) - 1  # GloVe style: the first vector tells the dimension
            if dim < 1:
                raise VectorFileError(f"{path}: line {line_no} holds a word but no vector")
        if check_first_vector:
            check_first_vector = False
            if len(line.split()) - 1 != dim:
                raise VectorFileError(
                    f"{path}: header says {dim} values per vector, but line {line_no} has {len(line.split()) - 1}"
                )
        entries += 1
        # Most lines hold unwanted words: skip them without parsing their values, unless they
        # have too few fields, which always means a malformed (e.g. truncated) line.
        if not collector.may_want_text(line.split(None, 1)[0]) and line.count(b" ") >= dim:
            continue
        collector.offer(*_parse_text_line(line, dim, path, line_no))
    if dim is None:
        raise VectorFileError(f"{path} is empty")
    if header_count is not None and header_count != entries:
        logger.warning("%s: header announces %d vectors, file holds %d", path, header_count, entries)
    return dim, entries


class _ByteReader:
    """Buffered reads of delimited and fixed-size pieces; holds at most about one chunk."""

    def __init__(self, stream: BinaryIO):
        self._stream = stream
        self._buffer = b""
        self._pos = 0

    def _fill(self) -> bool:
        chunk = self._stream.read(_READ_CHUNK_BYTES)
        self._buffer = self._buffer[self._pos :] + chunk
        self._pos = 0
        return bool(chunk)

    def read_until(self, delimiter: bytes) -> bytes | None:
        """Returns the bytes before `delimiter` and consumes both; None if it never comes."""
        while (end := self._buffer.find(delimiter, self._pos)) < 0:
            if not self._fill():
                return None
        piece = self._buffer[self._pos : end]
        self._pos = end + len(delimiter)
        return piece

    def read_exact(self, size: int) -> bytes:
        """Returns `size` bytes, or fewer at the end of the stream."""
        while len(self._buffer) - self._pos < size and self._fill():
            pass
        piece = self._buffer[self._pos : self._pos + size]
        self._pos += len(piece)
        return piece


def _read_binary(stream: BinaryIO, path: Path, collector: _Collector) -> tuple[int, int]:
    """Reads word2vec binary: header line, then word, space, float32s; returns (dim, entries)."""
    reader = _ByteReader(stream)
    header = reader.read_until(b"\n")
    if header is None:
        header = reader.read_exact(80)
        if not header:
            raise VectorFileError(f"{path} is empty")
    fields = header.split()
    if len(fields) != 2 or not all(field.isdigit() for field in fields):
        raise VectorFileError(f"{path}: line 1 should be the header 'count dimension', got {header[:80]!r}")
    count, dim = int(fields[0]), int(fields[1])
    record_bytes = 4 * dim
    for number in range(1, count + 1):
        word = reader.read_until(b" ")
        vector = reader.read_exact(record_bytes) if word is not None else b""
        if len(vector) < record_bytes:
            raise VectorFileError(f"{path}: entry {number} of {count} is truncated (the file ends inside it)")
        # The "\n" that the C tool writes after each vector shows up in front of the next word.
        word = word.lstrip(b"\n")
        if collector.may_want_binary(word):
            text = _decode(word, path, f"entry {number}")
            collector.offer(text, np.frombuffer(vector, dtype="<f4").astype(np.float32))
    return dim, count


def read_word_vectors(path: str | os.PathLike, wanted: Iterable[str] | None = None) -> WordVectors:
    """Streams a word2vec-format file and keeps the vectors of the wanted words.

    Memory grows with the number of kept words, not with the file. Formats, told apart by name:
    `.bin` is word2vec binary, anything else word2vec text with a "count dim" header (fastText
    `.vec`, Tencent AI Lab, Chinese-Word-Vectors `sgns.*`) or without one (GloVe); a `.gz` or
    `.bz2` suffix is decompressed on the fly. Text is UTF-8 (a BOM is accepted).

    Lines of unwanted words are skipped without parsing their values, so a malformed value there
    goes unnoticed; a line with too few values is reported wherever it is. A line with too many
    values cannot be told from a word containing spaces, and reads as an (unwanted) longer word.

    Args:
        path: The vector file.
        wanted: Words to keep; None keeps every word.

    Returns:
        The kept words in file order with their float32 vectors. A word listed twice keeps its
        first vector (a warning counts the duplicates).

    Raises:
        VectorFileError: The file is empty, malformed (the message names the file and the 1-based
            line or entry number) or a fastText model rather than word vectors.
    """
    path = Path(path)
    _check_not_fasttext_model(path)
    collector = _Collector(wanted)
    read = _read_binary if _is_word2vec_binary(path) else _read_text
    try:
        with _open_compressed(path) as stream:
            dim, entries = read(stream, path, collector)
    except EOFError as err:  # gzip and bz2 raise it for a cut-off download
        raise VectorFileError(f"{path}: the compressed data ends early ({err})") from None
    if collector.duplicates:
        logger.warning("%s: %d duplicated words; kept the first vector of each", path, collector.duplicates)
    words = list(collector.rows)
    vectors = np.stack(list(collector.rows.values())) if words else np.zeros((0, dim), np.float32)
    logger.info("read %s: dimension %d, %d entries, kept %d words", path, dim, entries, len(words))
    return WordVectors(words=words, vectors=vectors)
