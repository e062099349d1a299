"""Write a table's rows with predictions after its columns: csv, tsv, jsonl or parquet, chunk by chunk.

The input's values are written back as read; CSV/TSV scores with 6 decimals. A file of millions of
rows is written a chunk at a time, so memory stays flat; it goes to a temporary name beside the
output and is renamed when complete. Rows without text get empty predictions (`spread_over_rows`). An
operating system's error while writing (no space, read-only, permission) is a `StorageError` naming the output.
"""

import contextlib
import csv
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from finetune.data.tables import DataError
from finetune.errors import storage_error
from finetune.files import atomic_path

PREDICTED_LABEL, SCORE = "predicted_label", "score"
PREDICTED_LABELS = "predicted_labels"  # multi-label: the list of labels at or above their thresholds
OUTPUT_FORMATS = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
LISTED_ROWS = 10  # rows without text that the warning names

logger = logging.getLogger(__name__)


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


@dataclass
class PredictionColumns:
    """The prediction columns of a model: its labels in id order, a multi-label model's thresholds (else
    None) and how many labels of each row get a `score_<label>` (`prediction_columns`' `top_k`)."""

    labels: list[str]
    thresholds: list[float] | None
    top_k: int

    def columns_taken(self) -> list[str]:
        """The columns besides `predicted_label` and `score` that the predictions take."""
        scores = [f"{SCORE}_{label}" for label in self.labels] if self.top_k else []
        return ([PREDICTED_LABELS] if self.thresholds is not None else []) + scores

    def columns(self, scores: np.ndarray) -> dict[str, list]:
        """The prediction columns of rows of scores (`prediction_columns`, `multilabel_prediction_columns`)."""
        if self.thresholds is None:
            return prediction_columns(scores, self.labels, self.top_k)
        return multilabel_prediction_columns(scores, self.labels, self.thresholds)


def spread_over_rows(columns: dict[str, list], labelled: np.ndarray) -> dict[str, list]:
    """Predictions of the `labelled` rows (a boolean per row) put in their rows; the others get None in every
    column (empty in CSV/TSV, null in JSON and parquet)."""
    if labelled.all():
        return columns
    rows = np.flatnonzero(labelled).tolist()
    spread = {}
    for name, values in columns.items():
        spread[name] = [None] * len(labelled)
        for row, value in zip(rows, values, strict=True):
            spread[name][row] = value
    return spread


class RowsWithoutText:
    """Counts the rows written and those left without a label; `report` warns of the latter."""

    def __init__(self):
        self.rows, self.count, self.listed = 0, 0, []

    def add(self, labelled: np.ndarray) -> None:
        missing = np.flatnonzero(~labelled)
        self.listed += (self.rows + missing[: LISTED_ROWS - len(self.listed)] + 1).tolist()
        self.rows, self.count = self.rows + len(labelled), self.count + len(missing)

    def report(self) -> None:
        if self.count:
            rows = ", ".join(map(str, self.listed)) + (", ..." if self.count > len(self.listed) else "")
            subject = "1 row has" if self.count == 1 else f"{self.count} rows have"
            logger.warning("%s no text (row%s %s): left without a label", subject, "s"[: self.count > 1], rows)


def check_tsv_cells(table: pa.Table, source: Path, first_row: int = 0) -> None:
    """A TSV (no quoting) cannot hold a tab or a line break inside a value: refuse the first one (`first_row`:
    the table's first row's index in the file, for a chunk's)."""
    for name, column in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_dictionary(column.type) and pa.types.is_string(column.type.value_type):
            column = column.cast(pa.string())
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            continue  # numbers, lists...: written as numbers or JSON, never with a raw tab
        breaks = pc.match_substring_regex(column, r"[\t\n\r]")
        if pc.any(breaks).as_py():
            row = pc.index(breaks, True).as_py()
            raise DataError(
                f"{source}: row {first_row + row + 1}, column '{name}' holds a tab or line break, which a .tsv cannot "
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
    when the block ends (removed if it fails); the extension picks the format. The temporary file is made
    on entering, so that an output that cannot be written fails before any work.

    Args:
        output_file: A .csv, .tsv, .jsonl, .json (written as JSON Lines) or .parquet path.

    Raises:
        StorageError: Making, writing or renaming the file failed (no space, read-only, permission...).
    """
    suffix, in_block = output_file.suffix.lower(), False
    try:
        with atomic_path(output_file) as temporary:
            if suffix == ".parquet":
                writer = _ParquetWriter(temporary)
            elif suffix in (".jsonl", ".json"):
                writer = _JsonLinesWriter(temporary)
            else:
                writer = _DelimitedWriter(temporary, tsv=suffix == ".tsv")
            try:
                in_block = True
                yield _storing(writer.write, output_file)
                in_block = False
            except BaseException:
                with contextlib.suppress(OSError):  # (a full disk fails the close's flush too: keep the first error)
                    writer.close()
                raise
            writer.close()
    except OSError as error:
        if in_block:  # the block's own (e.g. reading the input), not the output's
            raise
        raise storage_error(error, output_file, "writing the predictions") from error


def _storing(write: Callable, output_file: Path) -> Callable:
    def store(table: pa.Table, predictions: dict[str, list]) -> None:
        try:
            write(table, predictions)
        except OSError as error:
            raise storage_error(error, output_file, "writing the predictions") from error

    return store
