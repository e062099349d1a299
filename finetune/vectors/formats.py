"""The word2vec file formats behind `finetune.vectors.reading.read_word_vectors`: text and binary, plain or gzip/bz2.

The byte-level half of reading word vectors, kept apart from `finetune.vectors.reading` (which words to keep,
the cache, what is logged): a file's name picks its reader (`.bin` is word2vec binary, anything else
word2vec text with or without a "count dim" header; `.gz` and `.bz2` are decompressed on the fly), its
first bytes are checked against that name, and every malformed line or entry is a `VectorFileError`
that names the file and the line or entry. `read_vector_file` is the one entry point.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import logging
import os
import re
import sys
import zlib
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
from tqdm.auto import tqdm

from finetune.errors import FinetuneError

__all__ = ["FASTTEXT_MAGIC", "VectorFileError", "read_vector_file"]

logger = logging.getLogger(__name__)

# fastText's `.bin` *model* files start with this int32; its word vectors ship as a `.vec` file.
FASTTEXT_MAGIC = 793712314
_READ_CHUNK_BYTES = 1 << 20
# The progress bar of a read: drawn only once a read has lasted PROGRESS_DELAY_SECONDS (a small file, a test,
# reads in silence); redrawn at most every PROGRESS_INTERVAL_SECONDS on a terminal, and less often where
# stderr is a log file, which keeps each redraw.
PROGRESS_DELAY_SECONDS = 2.0
PROGRESS_INTERVAL_SECONDS = 0.5
PROGRESS_LOG_INTERVAL_SECONDS = 30.0
_PROGRESS_EVERY = 1 << 14  # lines or entries between two looks at the file's position: a few MB
_GZIP_MAGIC = b"\x1f\x8b"
# "BZh", the block size digit, then the magic of the first block (or of the end of an empty stream):
# ten bytes, so a text file whose first word starts with "BZh" is not taken for bz2.
_BZIP2_MAGIC = re.compile(rb"BZh[1-9](\x31\x41\x59\x26\x53\x59|\x17\x72\x45\x38\x50\x90)")
_COMPRESSION_SUFFIX = {"gzip": ".gz", "bz2": ".bz2"}
# What the first vector of a text file is made of; float32 bytes of real vectors never are.
_NUMBER_BYTES = frozenset(b"0123456789.-+eE \t\r")
# C0 control bytes never occur in UTF-8 (or GBK) text apart from tab and line ends; float32 bytes hold many.
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")


class VectorFileError(FinetuneError, ValueError):
    """A word-vector file is malformed; the message names the file and the line or entry."""


class _OtherFormat(VectorFileError):
    """The file is in the other word2vec format than its name says: read it as that one."""


class _Collector:
    """Keeps the wanted vectors (first occurrence wins) while a reader walks a file."""

    def __init__(self, wanted: Iterable[str] | None):
        self.wanted = None if wanted is None else set(wanted)
        self.rows: dict[str, np.ndarray] = {}  # dicts keep insertion order, i.e. file order
        self.duplicates = 0
        self.warnings: list[str] = []  # logged by read_word_vectors, and again when read from the cache
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


def _named_compression(path: Path) -> str | None:
    name = path.name.lower()
    return next((kind for kind, suffix in _COMPRESSION_SUFFIX.items() if name.endswith(suffix)), None)


def _open_compressed(path: Path, raw: BinaryIO | None = None) -> BinaryIO:
    """The file's bytes, decompressed as its name says; read through `raw` (the file, opened) if given."""
    kind = _named_compression(path)
    source = path if raw is None else raw
    if kind == "gzip":
        return gzip.open(source, "rb")
    if kind == "bz2":
        return bz2.open(source, "rb")
    return open(path, "rb") if raw is None else raw


@contextmanager
def _read_progress(path: Path, raw: BinaryIO, shown: bool):
    """`advance()`, which moves a bar over the file's bytes (its compressed bytes for .gz/.bz2) to where
    `raw` is; the readers call it every `_PROGRESS_EVERY` lines or entries. A Tencent file takes minutes."""
    if not shown:
        yield lambda: None
        return
    size = os.fstat(raw.fileno()).st_size
    interval = PROGRESS_INTERVAL_SECONDS if sys.stderr.isatty() else PROGRESS_LOG_INTERVAL_SECONDS
    bar = tqdm(total=size, desc=f"Reading {path.name}", unit="B", unit_scale=True, unit_divisor=1024,
               delay=PROGRESS_DELAY_SECONDS, mininterval=interval)  # fmt: skip
    with bar:
        yield lambda: bar.update(raw.tell() - bar.n)


def _is_word2vec_binary(path: Path) -> bool:
    name = path.name.lower().removesuffix(".gz").removesuffix(".bz2")
    return name.endswith(".bin")


def _split_compression(path: Path) -> tuple[str, str]:
    """("vec.txt", ".gz") for vec.txt.gz: the name, and its compression suffix as written ("" if none)."""
    kind = _named_compression(path)
    cut = len(path.name) - len(_COMPRESSION_SUFFIX[kind]) if kind else len(path.name)
    return path.name[:cut], path.name[cut:]


def _renamed(path: Path, format_suffix: str) -> str:
    """The file's name with `format_suffix` (.bin or .txt) as its format, a .gz/.bz2 suffix kept."""
    stem, compression = _split_compression(path)
    base, dot, extension = stem.rpartition(".")
    if dot and extension.lower() in ("txt", "vec", "bin"):
        stem = base
    return stem + format_suffix + compression


def _check_compression_matches_name(path: Path) -> None:
    """The name picks the decompressor: a misnamed file would read as garbage or fail deep inside gzip."""
    with open(path, "rb") as raw:
        head = raw.read(10)
    actual = "gzip" if head.startswith(_GZIP_MAGIC) else "bz2" if _BZIP2_MAGIC.match(head) else None
    named = _named_compression(path)
    if actual == named or not head:  # an empty file is reported as such by the readers
        return
    stem = _split_compression(path)[0]
    if actual:
        suffix = _COMPRESSION_SUFFIX[actual]
        raise VectorFileError(
            f"{path} is {actual}-compressed but its name does not end in {suffix}: name it {stem}{suffix}"
        )
    raise VectorFileError(
        f"{path} is not {named}-compressed (it starts with {head!r}): name it {stem}, without "
        f"{_COMPRESSION_SUFFIX[named]}"
    )


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


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _check_finite(vector: np.ndarray, path: Path, where: str, texts: list[str] | None = None) -> None:
    """A NaN or inf value would make every loss NaN: the whole run would train nothing, silently."""
    bad = np.flatnonzero(~np.isfinite(vector))
    if not len(bad):
        return
    value = texts[bad[0]] if texts is not None else str(vector[bad[0]])
    # "1e39" is a finite number, but not a float32 one
    overflow = " (too large for float32)" if texts is not None and np.isfinite(float(value)) else ""
    raise VectorFileError(f"{path}: {where}: value {value} is not a finite number{overflow}")


def _parse_text_line(line: bytes, dim: int, path: Path, line_no: int) -> tuple[str, np.ndarray]:
    # Split from the right: the last `dim` fields are numbers, the rest (spaces included) the word.
    fields = _decode(line, path, f"line {line_no}").rsplit(None, dim)
    if len(fields) != dim + 1:
        raise VectorFileError(f"{path}: line {line_no} has {len(fields) - 1} values, expected {dim}")
    try:
        vector = np.array(fields[1:], dtype=np.float32)
    except ValueError as err:  # numpy names the value: "could not convert string to float: 'x'"
        raise VectorFileError(f"{path}: line {line_no}: {err}") from None
    _check_finite(vector, path, f"line {line_no} ({fields[0]!r})", fields[1:])
    return fields[0], vector


def _check_first_text_vector(line: bytes, dim: int, path: Path, line_no: int) -> None:
    """The line after a "count dim" header: is it the first vector, as text, of the size announced?"""
    values = len(line.split()) - 1
    # word2vec binary read as text: the float32 bytes hold control bytes, or at least bytes that
    # are not UTF-8 (a GBK text file is not UTF-8 either, but has the right number of values).
    if _CONTROL_BYTES.search(line) or (values != dim and not _is_utf8(line)):
        raise _OtherFormat(
            f"{path}: looks like word2vec binary, e.g. {_renamed(path, '.bin')} "
            f"(line {line_no}, after the header 'count dimension', holds bytes that are not text)"
        )
    if values != dim:
        raise VectorFileError(f"{path}: header says {dim} values per vector, but line {line_no} has {values}")


def _read_text(stream: BinaryIO, path: Path, collector: _Collector, advance: Callable[[], None]) -> tuple[int, int]:
    """Reads word2vec text with or without a "count dim" header; returns (dim, entries)."""
    dim = header_count = None
    check_first_vector = False
    entries = 0
    for line_no, raw in enumerate(stream, start=1):
        if line_no == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        elif line_no % _PROGRESS_EVERY == 0:
            advance()
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
            _check_first_text_vector(line, dim, path, line_no)
        entries += 1
        # Most lines hold unwanted words: skip them without parsing their values, unless they
        # have too few fields, which always means a malformed (e.g. truncated) line.
        if not collector.may_want_text(line.split(None, 1)[0]) and line.count(b" ") >= dim:
            continue
        collector.offer(*_parse_text_line(line, dim, path, line_no))
    if dim is None:
        raise VectorFileError(f"{path} is empty")
    if header_count is not None and header_count != entries:
        collector.warnings.append(f"{path}: header announces {header_count} vectors, file holds {entries}")
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


def _is_text_vector(raw: bytes) -> bool:
    """Whether bytes read as float32s are in fact numbers written as text (up to the line's end)."""
    first_line = raw.split(b"\n", 1)[0]
    return any(byte in b"0123456789" for byte in first_line) and set(first_line) <= _NUMBER_BYTES


def _text_named_bin(path: Path, where: str) -> VectorFileError:
    return _OtherFormat(f"{path}: looks like word2vec text, e.g. {_renamed(path, '.txt')} ({where})")


def _read_binary_header(reader: _ByteReader, path: Path) -> tuple[int, int]:
    header = reader.read_until(b"\n")
    if header is None:
        header = reader.read_exact(80)
        if not header:
            raise VectorFileError(f"{path} is empty")
    fields = header.split()
    if len(fields) != 2 or not all(field.isdigit() for field in fields):
        if len(fields) > 1 and all(_is_text_vector(field) for field in fields[1:]):
            raise _text_named_bin(path, f"line 1 is a word and {len(fields) - 1} numbers, not a header")
        raise VectorFileError(f"{path}: line 1 should be the header 'count dimension', got {header[:80]!r}")
    return int(fields[0]), int(fields[1])


def _read_binary(stream: BinaryIO, path: Path, collector: _Collector, advance: Callable[[], None]) -> tuple[int, int]:
    """Reads word2vec binary: header line, then word, space, float32s; returns (dim, entries)."""
    reader = _ByteReader(stream)
    count, dim = _read_binary_header(reader, path)
    record_bytes = 4 * dim
    for number in range(1, count + 1):
        if number % _PROGRESS_EVERY == 0:
            advance()
        word = reader.read_until(b" ")
        vector = reader.read_exact(record_bytes) if word is not None else b""
        if number == 1 and _is_text_vector(vector):
            raise _text_named_bin(path, "entry 1's vector is digits and spaces, not float32 bytes")
        if len(vector) < record_bytes:
            raise VectorFileError(f"{path}: entry {number} of {count} is truncated (the file ends inside it)")
        # The "\n" that the C tool writes after each vector shows up in front of the next word.
        word = word.lstrip(b"\n")
        if collector.may_want_binary(word):
            text = _decode(word, path, f"entry {number}")
            values = np.frombuffer(vector, dtype="<f4").astype(np.float32)
            _check_finite(values, path, f"entry {number} ({text!r})")
            collector.offer(text, values)
    return dim, count


def read_vector_file(path: Path, wanted: set[str] | None, progress: bool = False) -> tuple[list[str], np.ndarray, dict]:
    """Reads the file, keeping the `wanted` words (None: all): the kept words, their vectors and `info`
    (dim, entries, warnings to log). `progress`: show a bar over the bytes read (on stderr, once the read has
    lasted `PROGRESS_DELAY_SECONDS`)."""
    _check_compression_matches_name(path)
    named_binary = _is_word2vec_binary(path)
    try:
        collector, dim, entries = _read_as(path, wanted, named_binary, progress)
        binary = named_binary
    except _OtherFormat as mismatch:
        # The content decides (synonyms' `words.vector` is word2vec binary): read as the other format; where
        # that fails too, the file is neither, and the first reader's error says what it saw.
        try:
            collector, dim, entries = _read_as(path, wanted, not named_binary, progress)
        except VectorFileError:
            raise VectorFileError(str(mismatch).replace(", e.g. ", ", but it does not read as that either (as ")
                                  + ")") from None  # fmt: skip
        binary = not named_binary
        logger.info("%s: read as word2vec %s, by its content (its name says %s)", path,
                    *(("binary", "text") if binary else ("text", "binary")))  # fmt: skip
    if collector.duplicates:
        collector.warnings.append(f"{path}: {collector.duplicates} duplicated words; kept the first vector of each")
    words = list(collector.rows)
    vectors = np.stack(list(collector.rows.values())) if words else np.zeros((0, dim), np.float32)
    info = {"dim": dim, "entries": entries, "warnings": collector.warnings}
    return words, vectors, {**info, "format": "word2vec binary" if binary else "word2vec text"}


def _read_as(path: Path, wanted: set[str] | None, binary: bool, progress: bool) -> tuple[_Collector, int, int]:
    """One pass over the file as word2vec binary or text: (the kept vectors, dim, entries)."""
    collector = _Collector(wanted)
    read = _read_binary if binary else _read_text
    try:
        _check_not_fasttext_model(path)
        # "1e39" overflows float32 to inf, which _check_finite reports: numpy need not warn as well.
        with open(path, "rb") as raw, _open_compressed(path, raw) as stream, np.errstate(over="ignore"):
            with _read_progress(path, raw, progress) as advance:
                dim, entries = read(stream, path, collector, advance)
                advance()
    except EOFError as err:  # gzip and bz2 raise it for a cut-off download
        raise VectorFileError(f"{path}: the compressed data ends early ({err})") from None
    except (OSError, zlib.error) as err:  # gzip.BadGzipFile, bz2's "Invalid data stream", a bad CRC
        if _named_compression(path) is None:
            raise
        raise VectorFileError(f"{path}: the compressed data is damaged ({err})") from None
    return collector, dim, entries
