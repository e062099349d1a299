"""Read a labelled table from csv/tsv/json/jsonl/parquet or a `datasets` directory, in any of the
encodings Chinese corpora come in (UTF-8, UTF-8 with BOM, GBK/GB18030).

Every problem a user can fix raises `DataError`, whose message names the file and the line.
"""

from __future__ import annotations

import csv
import glob
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import datasets

logger = logging.getLogger(__name__)

LOADERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
# GB18030 is a superset of GBK and GB2312, so these two cover the usual Chinese corpora.
ENCODINGS = ("utf-8-sig", "gb18030")
_CHUNK_BYTES = 1 << 24


class DataError(ValueError):
    """A problem in the user's data; the message names the file and the line, row or column."""


def _count_lines_or_find_bad_byte(path: Path, encoding: str) -> int | tuple[int, int, int]:
    """Strictly decode a file: its line count, or the (offset, line, value) of its first bad byte."""
    offset, lines, last_byte = 0, 0, b"\n"
    with open(path, "rb") as file:
        # Chunks end at a newline, and 0x0A never occurs inside a UTF-8 or GB18030 character,
        # so each chunk decodes on its own.
        while chunk := file.read(_CHUNK_BYTES) + file.readline():
            try:
                chunk.decode(encoding)
            except UnicodeDecodeError as error:
                line = lines + chunk.count(b"\n", 0, error.start) + 1
                return offset + error.start, line, chunk[error.start]
            offset, lines, last_byte = offset + len(chunk), lines + chunk.count(b"\n"), chunk[-1:]
    return lines + (last_byte != b"\n")


def _detect_encoding(path: Path) -> tuple[str, int]:
    """Return the first of `ENCODINGS` that decodes the whole file, and the file's line count."""
    failures = []
    for encoding, name in zip(ENCODINGS, ("UTF-8", "GB18030/GBK"), strict=True):
        result = _count_lines_or_find_bad_byte(path, encoding)
        if isinstance(result, int):
            return encoding, result
        offset, line, byte = result
        failures.append(f"{name} (byte 0x{byte:02x} at line {line}, byte offset {offset})")
    raise DataError(f"{path}: cannot decode: not {' nor '.join(failures)}; re-save the file as UTF-8")


def _load_file(path: Path, encoding: str | None) -> datasets.Dataset:
    """Read a CSV, TSV, JSON, JSON Lines or parquet file with its `datasets` loader."""
    loader, options = LOADERS[path.suffix.lower()], {}
    if loader == "csv":
        # Only empty fields are missing: pandas' defaults would also make "NA" or "null" missing.
        options = {"encoding": encoding, "keep_default_na": False, "na_values": [""]}
        if path.suffix.lower() == ".tsv":
            # TSV corpora leave quote marks unescaped inside texts, so quoting must be off.
            options.update(sep="\t", quoting=csv.QUOTE_NONE)
    with tempfile.TemporaryDirectory(prefix="finetune-data-") as cache_dir:
        if loader == "json" and encoding != "utf-8-sig":  # the JSON loader reads UTF-8 only
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


def _load_saved(path: Path, split_name: str | None) -> tuple[datasets.Dataset, str]:
    """Load a `save_to_disk` directory; from a DatasetDict take `split_name`, else "train"."""
    try:
        saved = datasets.load_from_disk(str(path), keep_in_memory=True)
    except FileNotFoundError as error:
        raise DataError(f"{path}: not a directory written by save_to_disk ({error})") from error
    if isinstance(saved, datasets.Dataset):
        return saved, str(path)
    chosen = split_name if split_name in saved else "train"
    if chosen not in saved:
        raise DataError(f"{path}: no split '{split_name or 'train'}' (splits: {', '.join(saved)})")
    return saved[chosen], f"{path} [{chosen}]"


def read_table_located(path, split_name: str | None) -> tuple[datasets.Dataset, str, Callable[[int], str]]:
    """`read_table`, plus the table's name for messages and a function giving a row's place:
    "line N" where every row is one line of the file, "row N" otherwise."""
    path, suffix = Path(path), Path(path).suffix.lower()
    source, locate = str(path), lambda index: f"row {index + 1}"
    try:
        if path.is_dir():
            table, source = _load_saved(path, split_name)
        elif not path.is_file():
            raise DataError(f"{path}: no such file or directory")
        elif path.stat().st_size == 0:
            raise DataError(f"{path}: the file is empty")
        elif suffix not in LOADERS:
            formats = ", ".join(LOADERS)
            raise DataError(f"{path}: unsupported format (use {formats} or a directory written by save_to_disk)")
        elif suffix == ".parquet":
            table = _load_file(path, None)
        else:
            encoding, line_count = _detect_encoding(path)
            table = _load_file(path, encoding)
            header = int(LOADERS[suffix] == "csv")
            if line_count == table.num_rows + header:
                locate = lambda index: f"line {index + 1 + header}"  # noqa: E731
    except DataError:
        raise
    except Exception as error:  # the loaders' parse errors (pandas, pyarrow, datasets) vary by format
        if "corresponds to no data" in str(error):
            raise DataError(f"{path}: no rows in the file") from error
        raise DataError(f"{path}: cannot read the file: {error.__cause__ or error}") from error
    if table.num_rows == 0:
        raise DataError(f"{source}: no rows")
    return table, source, locate


def read_table(path, *, split_name: str | None = None) -> datasets.Dataset:
    """Read a table of examples with `datasets`, whatever its format and encoding.

    Args:
        path: A `.csv`, `.tsv` (tab-separated, no quoting), `.json` (array or JSON Lines),
            `.jsonl` or `.parquet` file, or a directory written by `Dataset.save_to_disk` or
            `DatasetDict.save_to_disk`. Text files may be UTF-8 (BOM or not) or GB18030/GBK.
        split_name: The split to read from a saved DatasetDict; "train" if None or absent.

    Returns:
        The rows, with the file's columns and types unchanged.

    Raises:
        DataError: The file is missing, empty, undecodable (the message gives the line and byte
            offset of the first bad byte) or unparsable.
    """
    return read_table_located(path, split_name)[0]


def read_text_lines(path) -> list[str]:
    """Non-blank lines of a plain text file (UTF-8, UTF-8 with BOM or GB18030), stripped.

    Raises:
        DataError: The file is missing, undecodable (naming the line) or has no text.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    encoding, _ = _detect_encoding(path)
    lines = [line.strip() for line in path.read_text(encoding=encoding).splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise DataError(f"{path}: the file has no text")
    return lines
