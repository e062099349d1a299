"""Write a table's rows with predictions after its columns: csv, tsv, jsonl or parquet, chunk by chunk.

The input's values are written back as read; CSV/TSV scores with 6 decimals. A file of millions of
rows is written a chunk at a time, so memory stays flat; it goes to a temporary name beside the
output and is renamed when complete.
"""

import contextlib
import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .files import atomic_path
from .tables import DataError

PREDICTED_LABEL, SCORE = "predicted_label", "score"
PREDICTED_LABELS = "predicted_labels"  # multi-label: the list of labels at or above their thresholds
OUTPUT_FORMATS = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


def prediction_columns(probabilities: np.ndarray, labels: list[str], top_k: int) -> dict[str, list]:
    """`predicted_label` and `score`, and `score_<label>` for every label if `top_k`: that label's
    probability where it is among the row's `top_k` best, None elsewhere.

    Labels rank as `pipeline()` ranks them: by score, ties in label order.

    Args:
        probabilities: One row of label scores per text, in label order.
        labels: The label names, in id order.
        top_k: How many labels of each row get a `score_<label>` value (0: no such columns).
    """
    ranking = np.argsort(-probabilities, axis=-1, kind="stable")
    best = ranking[:, 0]
    columns = {
        PREDICTED_LABEL: [labels[index] for index in best.tolist()],
        SCORE: np.take_along_axis(probabilities, best[:, None], axis=-1)[:, 0].tolist(),
    }
    if top_k:
        kept = np.zeros(probabilities.shape, dtype=bool)
        np.put_along_axis(kept, ranking[:, :top_k], True, axis=-1)
        for index, label in enumerate(labels):
            scores, shown = probabilities[:, index].tolist(), kept[:, index].tolist()
            columns[f"{SCORE}_{label}"] = [score if show else None for score, show in zip(scores, shown, strict=True)]
    return columns


def multilabel_prediction_columns(probabilities: np.ndarray, labels: list[str], thresholds) -> dict[str, list]:
    """Multi-label: `predicted_labels` (the labels whose score reaches their threshold, in label
    order; a list, JSON in CSV/TSV) and `score_<label>` for every label (its sigmoid score).

    Args:
        probabilities: One row of label scores per text, in label order.
        labels: The label names, in id order.
        thresholds: One decision threshold per label, in id order.
    """
    chosen = probabilities >= np.asarray(thresholds)[None, :]
    columns = {PREDICTED_LABELS: [[labels[i] for i in np.flatnonzero(row)] for row in chosen]}
    for index, label in enumerate(labels):
        columns[f"{SCORE}_{label}"] = probabilities[:, index].astype(float).tolist()
    return columns


def check_tsv_cells(table: pa.Table, source: Path) -> None:
    """A TSV (no quoting) cannot hold a tab or a line break inside a value: refuse the first one."""
    for name, column in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_dictionary(column.type) and pa.types.is_string(column.type.value_type):
            column = column.cast(pa.string())
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            continue  # numbers, lists...: written as numbers or JSON, never with a raw tab
        breaks = pc.match_substring_regex(column, r"[\t\n\r]")
        if pc.any(breaks).as_py():
            row = pc.index(breaks, True).as_py()
            raise DataError(
                f"{source}: row {row + 1}, column '{name}' holds a tab or line break, which a .tsv cannot "
                "hold: name --output .csv, .jsonl or .parquet"
            )


def _cell(value, prediction: bool) -> str:
    """A value as a CSV/TSV field: None empty, lists and dicts as JSON, scores to 6 decimals."""
    if value is None:
        return ""
    if prediction and isinstance(value, float):
        return f"{value:.6f}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


class _DelimitedWriter:
    """CSV (UTF-8 with BOM: Excel then opens the Chinese texts correctly) or TSV (no quoting, as
    `read_table` reads a .tsv); the header goes before the first chunk."""

    def __init__(self, path: Path, tsv: bool):
        self.tsv = tsv
        self.file = open(path, "w", encoding="utf-8" if tsv else "utf-8-sig", newline="")  # noqa: SIM115
        self.csv = None if tsv else csv.writer(self.file)
        self.header_written = False

    def write(self, table: pa.Table, predictions: dict[str, list]) -> None:
        columns = [(column.to_pylist(), False) for column in table.columns]
        columns += [(values, True) for values in predictions.values()]
        rows = [[_cell(values[i], prediction) for values, prediction in columns] for i in range(table.num_rows)]
        if not self.header_written:
            rows.insert(0, [*table.column_names, *predictions])
            self.header_written = True
        if self.tsv:
            self.file.writelines("\t".join(cells) + "\n" for cells in rows)
        else:
            self.csv.writerows(rows)

    def close(self) -> None:
        self.file.close()


class _JsonLinesWriter:
    """One JSON object per input row (for .json outputs too), values keeping their JSON types."""

    def __init__(self, path: Path):
        self.file = open(path, "w", encoding="utf-8")  # noqa: SIM115

    def write(self, table: pa.Table, predictions: dict[str, list]) -> None:
        lines = []
        for index, row in enumerate(table.to_pylist()):
            row.update({name: values[index] for name, values in predictions.items()})
            lines.append(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        self.file.writelines(lines)

    def close(self) -> None:
        self.file.close()


class _ParquetWriter:
    """A row group per chunk; the input's column types kept, predictions as string and float64."""

    def __init__(self, path: Path):
        self.path, self.writer = path, None

    def write(self, table: pa.Table, predictions: dict[str, list]) -> None:
        # The `datasets` features in the metadata would not list the prediction columns.
        table = table.replace_schema_metadata(None)
        for name, values in predictions.items():
            kind = {PREDICTED_LABEL: pa.string(), PREDICTED_LABELS: pa.list_(pa.string())}.get(name, pa.float64())
            table = table.append_column(name, pa.array(values, type=kind))
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema)
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@contextlib.contextmanager
def prediction_writer(output_file: Path) -> Iterator[Callable[[pa.Table, dict[str, list]], None]]:
    """`write(rows, predictions)`, called once per chunk, into a temporary file renamed to `output_file`
    when the block ends (removed if it fails); the extension picks the format.

    Args:
        output_file: A .csv, .tsv, .jsonl, .json (written as JSON Lines) or .parquet path.
    """
    suffix = output_file.suffix.lower()
    with atomic_path(output_file) as temporary:
        if suffix == ".parquet":
            writer = _ParquetWriter(temporary)
        elif suffix in (".jsonl", ".json"):
            writer = _JsonLinesWriter(temporary)
        else:
            writer = _DelimitedWriter(temporary, tsv=suffix == ".tsv")
        try:
            yield writer.write
        finally:
            writer.close()
