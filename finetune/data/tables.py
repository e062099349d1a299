"""Read a labelled table from csv/tsv/json/jsonl/parquet or a `datasets` directory, in the
encodings Chinese corpora come in: UTF-8 (with or without BOM) or, detected and logged, GBK/GB18030,
Big5 and the others `charset_normalizer` knows; `encoding=` forces one.

Every problem a user can fix raises `DataError`, whose message names the file and the line.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import glob
import json
import logging
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import charset_normalizer
import datasets
import pandas as pd
import pyarrow as pa

from finetune.errors import FinetuneError

logger = logging.getLogger(__name__)

LOADERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
# A BOM, where there is one, is not part of the first column's name.
UTF8 = "utf-8-sig"
_CHUNK_BYTES = 1 << 24
# Detection looks at the file's start; the encoding it picks must still decode the whole file.
_SAMPLE_BYTES = 1 << 20
# Measured on genuine reviews (GBK simplified, Big5 traditional, 1 to 200 lines): the right
# encoding leaves at most 0.09 of unlikely characters (about 0.02 from 10 lines on), and a wrong
# one that decodes (cp949, cp932, johab for 1-2 line files) comes within 0.1 of it only in files
# of one or two lines, where the guess is doubtful anyway.
_MAX_CHAOS = 0.15
_CLOSE_CHAOS = 0.1
_ENCODING_FLAG = "--encoding"


class DataError(FinetuneError, ValueError):
    """A problem in the user's data; the message names the file and the line, row or column."""


def _ascii_compatible(encoding: str) -> bool:
    """Whether ASCII (newlines included) is one byte per character, as in UTF-8, GBK or Big5."""
    return "a\n".encode(encoding).endswith(b"a\n")


def _count_lines_or_find_bad_byte(path: Path, encoding: str) -> int | tuple[int, int, int]:
    """Strictly decode a file: its line count, or the (offset, line, value) of its first bad byte."""
    if not _ascii_compatible(encoding):  # UTF-16/32: 0x0A occurs inside characters
        data = path.read_bytes()
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as error:
            line = data[: error.start].decode(encoding, errors="replace").count("\n") + 1
            return error.start, line, data[error.start]
        return text.count("\n") + (not text.endswith("\n"))
    offset, lines, last_byte = 0, 0, b"\n"
    with open(path, "rb") as file:
        # Chunks end at a newline, and 0x0A never occurs inside a character of these encodings,
        # so each chunk decodes on its own.
        while chunk := file.read(_CHUNK_BYTES) + file.readline():
            try:
                chunk.decode(encoding)
            except UnicodeDecodeError as error:
                line = lines + chunk.count(b"\n", 0, error.start) + 1
                return offset + error.start, line, chunk[error.start]
            offset, lines, last_byte = offset + len(chunk), lines + chunk.count(b"\n"), chunk[-1:]
    return lines + (last_byte != b"\n")


def _bad_byte(name: str, found: tuple[int, int, int]) -> str:
    offset, line, byte = found
    return f"{name} (byte 0x{byte:02x} at line {line}, byte offset {offset})"


def _read_sample(path: Path) -> bytes:
    with open(path, "rb") as file:
        sample = file.read(_SAMPLE_BYTES)
        if file.read(1) and (end := sample.rfind(b"\n")) > 0:
            sample = sample[: end + 1]  # no character cut in two: detection would reject it
    return sample


def _mostly_utf8(sample: bytes) -> bool:
    """Whether most non-ASCII characters are valid UTF-8: a UTF-8 file with a damaged stretch.

    GBK and Big5 text read as UTF-8 yields under 0.3 valid characters per invalid sequence.
    """
    text = sample.decode("utf-8", errors="replace")
    invalid = text.count("\ufffd")
    non_ascii = len(text) - len(text.encode("ascii", errors="ignore"))
    return non_ascii - invalid > invalid


def _readings(matches: list) -> str:
    """The first line with non-ASCII text as each candidate reads it: the user sees which is right."""
    texts = [str(match) for match in matches]
    lines = [text.split("\n") for text in texts]
    number = next((i for i, line in enumerate(lines[0]) if not line.isascii()), 0)
    readings = []
    for match, split in zip(matches, lines, strict=True):
        line = split[number].rstrip("\r") if number < len(split) else ""
        line = line if len(line) <= 30 else line[:30] + "…"
        readings.append(f"{match.encoding} reads line {number + 1} as '{line}'")
    return "; ".join(readings)


def _guess_encoding(path: Path, sample: bytes, utf8_failure: str) -> str:
    """The encoding `charset_normalizer` finds for the sample, refused when the guess is doubtful."""
    matches = list(charset_normalizer.from_bytes(sample))
    if not matches:
        raise DataError(
            f"{path}: cannot decode: not {utf8_failure}, and no other encoding fits; "
            f"re-save the file as UTF-8 or give its encoding with {_ENCODING_FLAG}"
        )
    best, candidates, seen = matches[0], [matches[0]], {str(matches[0])}
    for match in matches[1:]:
        # Candidates that read the bytes as the same text (gbk and gb18030, say) are no rivals.
        if match.chaos - best.chaos < _CLOSE_CHAOS and str(match) not in seen:
            candidates.append(match)
            seen.add(str(match))
    if len(candidates) > 1 or best.chaos > _MAX_CHAOS:
        unlikely = f" ({best.percent_chaos:.0f}% unlikely characters)" if best.chaos > _MAX_CHAOS else ""
        raise DataError(
            f"{path}: cannot decode: not {utf8_failure}, and the encoding is doubtful: {_readings(candidates[:5])}"
            f"{unlikely}; give the right one with {_ENCODING_FLAG} or re-save the file as UTF-8"
        )
    return best.encoding


def _detect_encoding(path: Path) -> tuple[str, int]:
    """UTF-8 (BOM or not) if it decodes the whole file, else a detected encoding that does; and
    the file's line count. The detected encoding is logged."""
    found = _count_lines_or_find_bad_byte(path, UTF8)
    if isinstance(found, int):
        return UTF8, found
    utf8_failure = _bad_byte("UTF-8", found)
    sample = _read_sample(path)
    if _mostly_utf8(sample):
        raise DataError(
            f"{path}: cannot decode: not {utf8_failure}; the rest of the file is UTF-8, so that line is "
            "damaged: repair or remove it"
        )
    encoding = _guess_encoding(path, sample, utf8_failure)
    decoded = _count_lines_or_find_bad_byte(path, encoding)
    if not isinstance(decoded, int):
        raise DataError(
            f"{path}: cannot decode: not {utf8_failure} nor {_bad_byte(encoding, decoded)}, the encoding guessed "
            f"from the file's start; give the file's encoding with {_ENCODING_FLAG} or re-save it as UTF-8"
        )
    logger.info("%s: decoded as %s (UTF-8 failed at line %d)", path, encoding, found[1])
    return encoding, decoded


def resolve_encoding(path: Path, encoding: str | None) -> tuple[str, int]:
    """The encoding to read `path` with (`encoding` if given, checked; else detected) and its line count."""
    if encoding is None:
        return _detect_encoding(path)
    try:  # not b"": Python decodes empty bytes without looking the codec up
        b"\n\n\n\n".decode(encoding)
    except LookupError:  # unknown names, and codecs that are not text encodings (rot13, base64)
        raise DataError(
            f"{path}: unknown encoding {encoding!r} given by {_ENCODING_FLAG}; use a Python codec name "
            "such as utf-8, gb18030 or big5"
        ) from None
    except UnicodeDecodeError:
        pass
    chosen = UTF8 if codecs.lookup(encoding).name == "utf-8" else encoding
    found = _count_lines_or_find_bad_byte(path, chosen)
    if not isinstance(found, int):
        offset, line, byte = found
        raise DataError(
            f"{path}: cannot decode as {encoding} (given by {_ENCODING_FLAG}): byte 0x{byte:02x} at line {line}, "
            f"byte offset {offset}"
        )
    return chosen, found


def separator_hint(path) -> str:
    """A hint to end a message with: "; the file looks tab-separated: name it .tsv" for a `.csv`
    whose header line has tabs, the converse for a `.tsv` with commas and no tabs, one about
    full-width commas (，) where the header has only those; else ""."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv") or not path.is_file():
        return ""
    with open(path, "rb") as file:  # tab and comma are one byte in every ASCII-compatible encoding
        header = file.readline(1 << 16)
    if suffix == ".csv" and b"\t" in header:
        return "; the file looks tab-separated: name it .tsv"
    if suffix == ".tsv" and b"," in header and b"\t" not in header:
        return "; the file looks comma-separated: name it .csv"
    # The full-width comma "，" (UTF-8 or GBK bytes), typed by a Chinese input method.
    if b"," not in header and b"\t" not in header and (b"\xef\xbc\x8c" in header or b"\xa3\xac" in header):
        return "; its header separates the columns with full-width commas (，): use ASCII commas (,)"
    return ""


def parse_json(path: Path, text: str, first_line: int):
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        line, column = first_line + error.lineno - 1, error.colno
        raise DataError(f"{path}: line {line}, column {column}: invalid JSON ({error.msg})") from None


def load_json_as_written(path: Path, encoding: str) -> datasets.Dataset:
    """An array of objects or JSON Lines, read with `json` so strings stay strings (pyarrow's
    reader turns "2024-01-02" into a timestamp) and ints with nulls stay ints."""
    text = path.read_text(encoding=encoding)
    if text.lstrip().startswith("["):
        records = parse_json(path, text, 1)
        places = [f"item {index + 1}" for index in range(len(records))]
    else:  # not splitlines(): JSON strings may hold U+2028, which it would split on
        lines = [(number, line) for number, line in enumerate(text.split("\n"), 1) if line.strip()]
        records = [parse_json(path, line, number) for number, line in lines]
        places = [f"line {number}" for number, _ in lines]
    for place, record in zip(places, records, strict=True):
        if not isinstance(record, dict):
            raise DataError(f"{path}: {place}: not a JSON object")
    names = list(dict.fromkeys(key for record in records for key in record))
    return datasets.Dataset(json_columns(path, records, names))


def json_columns(path: Path, records: list[dict], names: list[str], schema: pa.Schema | None = None) -> pa.Table:
    """The records' values as columns `names`, of the types `schema` gives (None: inferred)."""
    columns = {}
    for name in names:
        try:
            columns[name] = pa.array([record.get(name) for record in records], schema and schema.field(name).type)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            raise DataError(f"{path}: column '{name}' mixes kinds of values ({error})") from None
    return pa.table(columns)


def _load_file(path: Path, encoding: str | None, as_written: bool = False) -> datasets.Dataset:
    """Read a CSV, TSV, JSON, JSON Lines or parquet file with its `datasets` loader."""
    loader, options = LOADERS[path.suffix.lower()], {}
    if loader == "csv":
        # Only empty fields are missing: pandas' defaults would also make "NA" or "null" missing.
        options = {"encoding": encoding, "keep_default_na": False, "na_values": [""]}
        if path.suffix.lower() == ".tsv":
            # TSV corpora leave quote marks unescaped inside texts, so quoting must be off.
            options.update(sep="\t", quoting=csv.QUOTE_NONE)
        if as_written:  # else pandas reads "007" as 7, and ints in a column with gaps as floats
            names = pd.read_csv(path, nrows=0, **options).columns
            options["features"] = datasets.Features({name: datasets.Value("string") for name in names})
    elif loader == "json" and as_written:
        return load_json_as_written(path, encoding)
    with tempfile.TemporaryDirectory(prefix="finetune-data-") as cache_dir:
        if loader == "json" and encoding != UTF8:  # the JSON loader reads UTF-8 only
            utf8_copy = Path(cache_dir) / path.name
            utf8_copy.write_text(path.read_text(encoding=encoding), encoding="utf-8")
            path = utf8_copy
        return datasets.load_dataset(
            loader,
            data_files=glob.escape(str(path)),
            split="train",
            keep_in_memory=True,
            cache_dir=cache_dir,
            **options,
        )


def load_saved_table(path: Path, split_name: str | None, keep_in_memory: bool = True) -> tuple[datasets.Dataset, str]:
    """Load a `save_to_disk` directory; from a DatasetDict take `split_name`, else "train"."""
    try:
        saved = datasets.load_from_disk(str(path), keep_in_memory=keep_in_memory)
    except FileNotFoundError as error:
        raise DataError(f"{path}: not a directory written by save_to_disk ({error})") from error
    if isinstance(saved, datasets.Dataset):
        return saved, str(path)
    chosen = split_name if split_name in saved else "train"
    if chosen not in saved:
        raise DataError(f"{path}: no split '{split_name or 'train'}' (splits: {', '.join(saved)})")
    return saved[chosen], f"{path} [{chosen}]"


def check_table_file(path: Path) -> str:
    """The suffix of a file `read_table` can read; else a DataError: missing, empty, of an unknown format."""
    if not path.is_file():
        raise DataError(f"{path}: no such file or directory")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    if path.suffix.lower() not in LOADERS:
        formats = ", ".join(LOADERS)
        raise DataError(f"{path}: unsupported format (use {formats} or a directory written by save_to_disk)")
    return path.suffix.lower()


@contextlib.contextmanager
def read_errors(path: Path) -> Iterator[None]:
    """The loaders' parse errors (pandas, pyarrow, datasets: they vary by format) as one DataError naming `path`."""
    try:
        yield
    except FinetuneError:  # ours, already naming the file
        raise
    except Exception as error:
        if "corresponds to no data" in str(error):
            raise DataError(f"{path}: no rows in the file") from error
        reason = str(error.__cause__ or error).strip()
        raise DataError(f"{path}: cannot read the file: {reason}{separator_hint(path)}") from error


def read_table_located(
    path, split_name: str | None, encoding: str | None = None, as_written: bool = False
) -> tuple[datasets.Dataset, str, Callable[[int], str]]:
    """`read_table`, plus the table's name for messages and a function giving a row's place:
    "line N" where every row is one line of the file, "row N" otherwise."""
    path, suffix = Path(path), Path(path).suffix.lower()
    source, locate = str(path), lambda index: f"row {index + 1}"
    with read_errors(path):
        if path.is_dir():
            table, source = load_saved_table(path, split_name)
        elif check_table_file(path) == ".parquet":
            table = _load_file(path, None)
        else:
            encoding, line_count = resolve_encoding(path, encoding)
            table = _load_file(path, encoding, as_written)
            header = int(LOADERS[suffix] == "csv")
            if line_count == table.num_rows + header:
                locate = lambda index: f"line {index + 1 + header}"  # noqa: E731
    if table.num_rows == 0:
        raise DataError(f"{source}: no rows")
    return table, source, locate


def read_table(
    path, *, split_name: str | None = None, encoding: str | None = None, as_written: bool = False
) -> datasets.Dataset:
    """Read a table of examples with `datasets`, whatever its format and encoding.

    Args:
        path: A `.csv`, `.tsv` (tab-separated, no quoting), `.json` (array or JSON Lines),
            `.jsonl` or `.parquet` file, or a directory written by `Dataset.save_to_disk` or
            `DatasetDict.save_to_disk`.
        split_name: The split to read from a saved DatasetDict; "train" if None or absent.
        encoding: The text file's encoding (a Python codec name such as "big5"). None: UTF-8
            (BOM or not) where it decodes the whole file, else detected by `charset_normalizer`
            and logged; a doubtful guess (short files, close candidates) is refused.
        as_written: Keep values as the file writes them: CSV/TSV columns as strings ("007" stays
            "007", empty fields None), JSON strings never turned into dates, ints with nulls
            ints. Parquet and saved datasets keep their types either way.

    Returns:
        The rows, with the file's columns and types unchanged.

    Raises:
        DataError: The file is missing, empty, unparsable, undecodable (the message gives the
            line and byte offset of the first bad byte) or of a doubtful encoding (the message
            shows a line as each candidate encoding reads it), or `encoding` is unknown.
    """
    return read_table_located(path, split_name, encoding, as_written)[0]


def read_text_lines(path, encoding: str | None = None) -> list[str]:
    """Non-blank lines of a plain text file, stripped; its encoding as in `read_table`.

    Raises:
        DataError: The file is missing, undecodable (naming the line) or has no text.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    encoding, _ = resolve_encoding(path, encoding)
    lines = [line.strip() for line in path.read_text(encoding=encoding).splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise DataError(f"{path}: the file has no text")
    return lines
