"""`finetune predict INPUT`: label every row of a table and write it back with the predictions, a chunk at a
time (`table_chunks`): memory stays flat in the rows; in forked processes on a CPU (`worker_processes`), or in
the processes of `accelerate launch`.
"""

import contextlib
import logging
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from finetune.data.table_chunks import TableChunks, read_table_chunks
from finetune.data.tables import DataError, separator_hint
from finetune.devices import create_accelerator
from finetune.errors import ArgumentError, storage_error
from finetune.files import remove_leftover_temporaries
from finetune.inference.classifier import process_shard, text_scorer
from finetune.inference.prediction_files import (
    OUTPUT_FORMATS,
    PREDICTED_LABEL,
    SCORE,
    PredictionColumns,
    RowsWithoutText,
    check_tsv_cells,
    prediction_writer,
    spread_over_rows,
)
from finetune.inference.text_scores import CHUNK_ROWS
from finetune.processes import PIECE_ROWS, LabellingProcesses, choose_num_proc, piece_bounds

logger = logging.getLogger(__name__)

__all__ = ["OUTPUT_FORMATS", "predict_file"]


def _check_output_path(input_file: Path, output_file: Path) -> None:
    """Refuse an output format we cannot write, and an output that is the input file."""
    if output_file.suffix.lower() not in OUTPUT_FORMATS:
        raise DataError(f"--output {output_file}: unknown format (name it {', '.join(OUTPUT_FORMATS)})")
    same = output_file.resolve() == input_file.resolve()
    if not same and output_file.exists() and input_file.exists():
        same = os.path.samefile(output_file, input_file)  # a hard link or a symlink to the input
    if same:
        raise DataError(
            f"--output {output_file} is the input file {input_file}: the input is never overwritten; "
            "choose another --output"
        )


def _top_k_count(top_k: int | str | None, label_count: int) -> int:
    """How many labels of each row get a `score_<label>` value: 0 for None, every one for "all"."""
    if top_k is None:
        return 0
    if top_k == "all":
        return label_count
    if isinstance(top_k, int) and not isinstance(top_k, bool) and top_k >= 1:
        return min(top_k, label_count)
    raise ArgumentError(f"--top_k must be a positive integer or 'all', got {top_k!r}")


def _check_input_columns(columns: list[str], source: Path, text_column: str, taken: list[str]) -> None:
    """The text column must be there, and no column may have a name the predictions take."""
    if text_column not in columns:
        raise DataError(
            f"{source}: no column '{text_column}' (columns: {', '.join(columns)}){separator_hint(source)}; "
            "give the text column with --text_column"
        )
    for name in taken:
        if name in columns:
            raise DataError(f"{source}: already has a column '{name}', where predictions would go; rename that column")


def _several_processes() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _remove_leftovers(output_file: Path) -> None:
    """Removes the temporary outputs of earlier runs that were killed (`remove_leftover_temporaries`)."""
    try:
        removed = remove_leftover_temporaries(output_file)
    except OSError as error:
        raise storage_error(error, output_file.parent, "removing the temporary files of an earlier run") from error
    for leftover in removed:
        logger.warning("Removed %s, left by an earlier run that was stopped", leftover)


def _check_tsv_chunks(chunks: TableChunks, source: Path) -> None:
    first_row = 0
    for table in chunks:
        check_tsv_cells(table, source, first_row)
        first_row += table.num_rows


def _open_model(model_dir, backend: str, device, chunks: TableChunks, accelerator, **options) -> tuple:
    """`score(texts, progress)`, the `PredictionColumns` of the model and the processes that label (`num_proc`)."""
    batch_size, num_proc = options["batch_size"], options["num_proc"]
    if batch_size is None:  # the fastest here: length-sorted batches of 64 (PyTorch) or 32 (onnxruntime's LSTM)
        batch_size = 64 if backend == "pytorch" else 32
    several = accelerator is not None
    planned = choose_num_proc(num_proc, chunks.row_count, on_cpu=True, several_launched=several)  # before loading
    # onnxruntime's session threads: one where it is forked (a thread pool does not survive a fork); PyTorch's
    # are set in each worker
    threads = 1 if planned > 1 else None
    score, labels, thresholds, on_cpu = text_scorer(model_dir, backend, batch_size, device, options["bf16"], threads)
    num_proc = choose_num_proc(num_proc, chunks.row_count, on_cpu, several)
    top_k = _top_k_count(options["top_k"], len(labels)) if thresholds is None else len(labels)  # multi-label: all
    return score, PredictionColumns(labels, thresholds, top_k), num_proc


def _texts_to_label(column: pa.ChunkedArray) -> tuple[list[str], np.ndarray]:
    """A chunk's texts that hold words, and which rows they are in (a boolean per row): a missing, empty or
    blank text has no words for the model to weigh, and would only get the label its bias leans to."""
    texts = ["" if text is None else str(text) for text in column.to_pylist()]
    labelled = np.fromiter((bool(text.strip()) for text in texts), dtype=bool, count=len(texts))
    return [text for text, keep in zip(texts, labelled.tolist(), strict=True) if keep], labelled


def _scored_chunks(score, chunks: TableChunks, text_column: str, label_count: int, num_proc: int, progress):
    """(chunk, rows with text, their scores) of each chunk, in order; `num_proc` > 1: labelled in that many
    forked processes (`LabellingProcesses`), the next chunk queued while the caller writes this one."""
    nothing = np.empty((0, label_count), dtype=np.float32)
    if num_proc == 1:
        for table in chunks:
            texts, labelled = _texts_to_label(table[text_column])
            scores = score(texts, progress) if texts else nothing
            progress.update(table.num_rows - len(texts))
            yield table, labelled, scores
        return
    piece_rows = min(chunks.chunk_rows, PIECE_ROWS)
    with LabellingProcesses(score, num_proc, piece_rows) as processes:
        bounds = piece_bounds(chunks.chunk_rows, num_proc, piece_rows)
        logger.info("Labelling in %d processes of %d thread(s): chunks of %d rows in pieces of up to %d",
                    num_proc, processes.threads, chunks.chunk_rows, max(np.diff(bounds)))  # fmt: skip
        pending = None
        for table in chunks:
            texts, labelled = _texts_to_label(table[text_column])
            job = processes.submit(texts) if texts else (lambda: nothing)
            if pending is not None:
                yield _finished(*pending, progress)
            pending = table, labelled, job
        if pending is not None:
            yield _finished(*pending, progress)


def _finished(table: pa.Table, labelled: np.ndarray, job, progress) -> tuple:
    scores = job()
    progress.update(table.num_rows)
    return table, labelled, scores


def _scored_shares(score, chunks: TableChunks, text_column: str, label_count: int, accelerator, progress):
    """`_scored_chunks` under `accelerate launch`: each process reads the whole table and labels a contiguous
    share of the rows; the main process gathers the scores (in process order: the input's) and yields the
    chunks. Memory is not flat here."""
    from accelerate.utils import gather_object

    table = pa.concat_tables(list(chunks))
    first, last = process_shard(table.num_rows, accelerator)
    rank, processes = accelerator.process_index + 1, accelerator.num_processes
    logger.info("Process %d of %d labels rows %d to %d", rank, processes, first + 1, last)
    texts, labelled = _texts_to_label(table[text_column].slice(first, last - first))
    scores = score(texts, progress) if texts else np.empty((0, label_count), dtype=np.float32)
    progress.update(len(labelled) - len(texts))
    shares = gather_object([(labelled, scores)])
    if not accelerator.is_main_process:
        return
    labelled = np.concatenate([share for share, _ in shares])
    scores = np.concatenate([share for _, share in shares])
    done = 0
    for start in range(0, table.num_rows, chunks.chunk_rows):
        rows = labelled[start : start + chunks.chunk_rows]
        yield table.slice(start, chunks.chunk_rows), rows, scores[done : done + int(rows.sum())]
        done += int(rows.sum())


def predict_file(
    model_dir: str | os.PathLike,
    input_file: str | os.PathLike,
    output_file: str | os.PathLike,
    *,
    text_column: str = "text",
    batch_size: int | None = None,
    top_k: int | str | None = None,
    encoding: str | None = None,
    chunk_size: int = CHUNK_ROWS,
    backend: str = "pytorch",
    bf16: bool = False,
    num_proc: int | None = None,
) -> int:
    """Label every row of `input_file` and write its columns, unchanged, plus the predictions.

    The input's values are written back as read: CSV/TSV fields as strings ("007" stays "007",
    empty stays empty), JSON and parquet values with their types (ints with nulls stay ints). The
    output has exactly one row per input row, in input order. The scores are those `pipeline()` gives. A
    multi-label model writes `predicted_labels` (the labels at or above their thresholds in
    `config.json`) and every label's `score_<label>` instead. Rows without text (missing, empty or only
    whitespace) are not run through the model: their predictions are left empty, and a warning counts them.

    The input is read, labelled and written `chunk_size` rows at a time (`read_table_chunks`: memory stays
    flat in the number of rows, but for a JSON array file, read whole). The output goes to a temporary
    file beside it, made before the model is loaded (an output that cannot be written fails first) and
    renamed when complete; temporary files of earlier runs that were killed are removed first. On a CPU
    under Linux, processes forked from this one (one per core: `num_proc`) label pieces of each chunk with
    one thread each while this one reads the next chunk and writes the last. Under `accelerate launch
    --num_processes N`, each launched process reads the whole table and labels a share of the rows, and the
    main process gathers the scores and writes the one output: memory grows with the rows there.

    Args:
        model_dir: A saved model directory (or Hub id).
        input_file: A table `read_table` reads (csv, tsv, json, jsonl, parquet, saved dataset).
        output_file: Where to write; its extension picks the format: .csv (UTF-8 with BOM), .tsv,
            .jsonl or .json (JSON Lines) or .parquet. Never the input file.
        text_column: The input column holding the texts.
        batch_size: Texts per forward pass (texts of similar length go together); None: 64 with PyTorch,
            32 with onnxruntime (the fastest on a CPU here).
        top_k: None, or an int K or "all": also a `score_<label>` column per label, holding that
            label's probability in the rows where it is among the K best (empty elsewhere).
        encoding: The input's encoding (e.g. "big5"); None: UTF-8, else detected and logged.
        chunk_size: Rows tokenized, sorted, labelled and written at a time.
        backend: "pytorch" (`pipeline()`'s model), or "onnx" / "onnx_int8": onnxruntime over the folder
            `finetune export` wrote (`OnnxClassifier`), no PyTorch.
        bf16: The PyTorch model in bfloat16 (`load_classifier`): on CPUs with AVX512-BF16 or AMX, 2.5x the
            model's texts/s here and 1.2-1.6x the file's rows/s, the same labels as float32 (README, "Speed").
        num_proc: Processes that label the rows on a CPU (Linux), one thread each; None: one per core
            where the file has at least 2,048 rows a process (`worker_processes.choose_num_proc`).

    Returns:
        The number of rows written: all of them on the main process, 0 on the others.

    Raises:
        DataError: The input is missing or unreadable, lacks `text_column` or already has a
            `predicted_label`, `score` or `score_<label>` column; or `output_file` is the input
            or has an unknown extension (the message names `--output`).
        StorageError: The output cannot be written (no space, read-only, permission): the message names it.
    """
    input_file, output_file = Path(input_file), Path(output_file)
    _check_output_path(input_file, output_file)
    chunks = read_table_chunks(input_file, chunk_size, encoding=encoding)
    _check_input_columns(chunks.column_names, input_file, text_column, [PREDICTED_LABEL, SCORE])
    if output_file.suffix.lower() == ".tsv":  # before labelling: a value deep in the file may hold a tab
        _check_tsv_chunks(chunks, input_file)
    accelerator = None
    if _several_processes():
        accelerator = create_accelerator()
    main = accelerator is None or accelerator.is_main_process
    with contextlib.ExitStack() as stack:
        write = None
        if main:
            _remove_leftovers(output_file)
            write = stack.enter_context(prediction_writer(output_file))
        device = None if accelerator is None else accelerator.device
        options = {"batch_size": batch_size, "top_k": top_k, "bf16": bf16, "num_proc": num_proc}
        score, predictions, num_proc = _open_model(model_dir, backend, device, chunks, accelerator, **options)
        _check_input_columns(chunks.column_names, input_file, text_column, predictions.columns_taken())
        progress = stack.enter_context(
            tqdm(total=chunks.row_count, desc="Predicting", unit="rows", unit_scale=True, disable=not main)
        )
        if accelerator is None:
            scored = _scored_chunks(score, chunks, text_column, len(predictions.labels), num_proc, progress)
        else:
            scored = _scored_shares(score, chunks, text_column, len(predictions.labels), accelerator, progress)
        without_text = RowsWithoutText()
        for table, labelled, scores in stack.enter_context(contextlib.closing(scored)):
            without_text.add(labelled)
            write(table, spread_over_rows(predictions.columns(scores), labelled))
        progress.total = progress.n  # a CSV's count of lines may differ from its rows
        progress.refresh()
    if accelerator is not None:
        # The process group ended in every process before it exits: a process leaving with gloo's threads still
        # running aborts ("terminate called without an active exception", exit -6), failing the launch
        accelerator.wait_for_everyone()
        accelerator.end_training()
    if not main:
        return 0
    without_text.report()
    logger.info("Wrote %d predictions to %s", without_text.rows, output_file)
    return without_text.rows
