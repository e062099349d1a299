"""Read a table a chunk of rows at a time (`read_table_chunks`), for `finetune predict` to label files of
any length in flat memory; the values as `tables.read_table(..., as_written=True)` gives them, the same
encodings and the same errors naming the file and the line.
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Callable, Iterator
from pathlib import Path

import datasets
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from finetune.data.tables import (
    LOADERS,
    DataError,
    check_table_file,
    json_columns,
    load_json_as_written,
    load_saved_table,
    parse_json,
    read_errors,
    resolve_encoding,
)


class TableChunks:
    """A table read a chunk of rows at a time (`read_table_chunks`): iterate it, again if need be, for its rows as
    pyarrow Tables, the values as `read_table(..., as_written=True)` gives them.

    Attributes:
        source: The table's name for messages (the path, and a saved DatasetDict's split).
        chunk_rows: The most rows of a chunk.
        column_names: Its columns.
        row_count: Its rows; for CSV/TSV the lines after the header (the rows unless a quoted text spans lines or
            lines are blank), known without parsing the file.
    """

    def __init__(self, path: Path, source: str, chunk_rows: int, column_names: list[str], row_count: int, chunks):
        self.path, self.source, self.chunk_rows = path, source, chunk_rows
        self.column_names, self.row_count, self._chunks = column_names, row_count, chunks

    def __iter__(self) -> Iterator[pa.Table]:
        with contextlib.closing(self._chunks()) as chunks:
            while True:
                with read_errors(self.path):
                    chunk = next(chunks, None)
                if chunk is None:
                    return
                yield chunk


def _csv_chunks(path: Path, encoding: str, chunk_rows: int) -> tuple[list[str], Callable]:
    # `_load_file`'s options for `as_written`: strings as written, only empty fields missing, TSV unquoted
    options = {"encoding": encoding, "keep_default_na": False, "na_values": [""]}
    if path.suffix.lower() == ".tsv":
        options.update(sep="\t", quoting=csv.QUOTE_NONE)
    names = [str(name) for name in pd.read_csv(path, nrows=0, **options).columns]
    schema = pa.schema([(name, pa.string()) for name in names])

    def chunks() -> Iterator[pa.Table]:
        with pd.read_csv(path, dtype=str, chunksize=chunk_rows, **options) as frames:
            for frame in frames:
                if len(frame):
                    yield pa.Table.from_pandas(frame, schema=schema, preserve_index=False)

    return names, chunks


def _parquet_chunks(path: Path, chunk_rows: int) -> tuple[list[str], int, Callable]:
    with pq.ParquetFile(path) as file:
        schema, row_count = file.schema_arrow, file.metadata.num_rows
    # the types `datasets`' parquet loader gives (`read_table`): those its features in the metadata name
    types = datasets.Features.from_arrow_schema(schema).arrow_schema

    def chunks() -> Iterator[pa.Table]:
        with pq.ParquetFile(path) as file:
            for batch in file.iter_batches(batch_size=chunk_rows):
                yield datasets.table.table_cast(pa.Table.from_batches([batch]), types)

    return schema.names, row_count, chunks


def _json_line_records(path: Path, encoding: str, chunk_rows: int) -> Iterator[list[dict]]:
    """The objects of a JSON Lines file, `chunk_rows` at a time; errors name the line."""
    records = []
    with open(path, encoding=encoding, newline="\n") as file:  # lines end at "\n" only: texts may hold U+2028
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            records.append(parse_json(path, line.removesuffix("\n"), number))
            if not isinstance(records[-1], dict):
                raise DataError(f"{path}: line {number}: not a JSON object")
            if len(records) == chunk_rows:
                yield records
                records = []
    if records:
        yield records


def _json_chunks(path: Path, encoding: str, chunk_rows: int) -> tuple[list[str], int, Callable]:
    """A JSON array is read whole; JSON Lines twice, a chunk at a time: first for the columns (keys first seen on
    any line) and their types (as one table of every line would have them: ints beside floats become floats),
    then for the rows."""
    with open(path, encoding=encoding) as file:
        array = file.read(1 << 16).lstrip().startswith("[")
    if array:
        table = load_json_as_written(path, encoding).with_format("arrow")[:]
        starts = range(0, table.num_rows, chunk_rows)
        return table.column_names, table.num_rows, lambda: (table.slice(start, chunk_rows) for start in starts)
    names, schema, row_count = {}, None, 0
    for records in _json_line_records(path, encoding, chunk_rows):
        names.update(dict.fromkeys(key for record in records for key in record))
        found = json_columns(path, records, list(names)).schema
        try:
            schema = found if schema is None else pa.unify_schemas([schema, found], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            raise DataError(f"{path}: a column mixes kinds of values ({error})") from None
        row_count += len(records)

    def chunks() -> Iterator[pa.Table]:
        for records in _json_line_records(path, encoding, chunk_rows):
            yield json_columns(path, records, list(names), schema)

    return list(names), row_count, chunks


def read_table_chunks(
    path, chunk_rows: int, *, split_name: str | None = None, encoding: str | None = None
) -> TableChunks:
    """A table `read_table` reads, `chunk_rows` rows at a time, its values as written (`as_written`): memory
    stays flat in the number of rows, except for a JSON array file, which is read whole.

    CSV and TSV are parsed by pandas a chunk at a time, parquet read a batch at a time, a saved dataset
    memory-mapped and sliced, JSON Lines a chunk of lines at a time.

    Args:
        path: As `read_table`'s.
        chunk_rows: The most rows of a chunk.
        split_name: As `read_table`'s.
        encoding: As `read_table`'s.

    Raises:
        DataError: As `read_table`; a problem further on in the file when the chunks reach it.
    """
    path = Path(path)
    source = str(path)
    with read_errors(path):
        if path.is_dir():
            dataset, source = load_saved_table(path, split_name, keep_in_memory=False)
            table = dataset.with_format("arrow")
            starts = range(0, len(dataset), chunk_rows)
            names, row_count = dataset.column_names, len(dataset)
            chunks = lambda: (table[start : start + chunk_rows] for start in starts)  # noqa: E731
        elif check_table_file(path) == ".parquet":
            names, row_count, chunks = _parquet_chunks(path, chunk_rows)
        else:
            encoding, line_count = resolve_encoding(path, encoding)
            if LOADERS[path.suffix.lower()] == "json":
                names, row_count, chunks = _json_chunks(path, encoding, chunk_rows)
            else:
                (names, chunks), row_count = _csv_chunks(path, encoding, chunk_rows), line_count - 1
    table_chunks = TableChunks(path, source, chunk_rows, names, row_count, chunks)
    if row_count == 0 or next(iter(table_chunks), None) is None:  # reads the first chunk: early errors too
        raise DataError(f"{source}: no rows")
    return table_chunks
