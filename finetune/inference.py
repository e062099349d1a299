"""Use a trained model: label a file of texts, show which words the attention pooling weighed."""

import csv
import json
import logging
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm
from transformers import pipeline

from .errors import ArgumentError
from .files import atomic_path
from .model_files import check_finite_weights, check_model_directory, hub_errors
from .tables import DataError, read_table, separator_hint

logger = logging.getLogger(__name__)

PREDICTED_LABEL, SCORE = "predicted_label", "score"
OUTPUT_FORMATS = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


def load_classifier(model_dir: str | os.PathLike, device: int | str | None = None, **kwargs):
    """`pipeline("text-classification")` over a saved model directory (or Hub id).

    Raises:
        ModelDirectoryError: The directory is missing, incomplete or damaged (the file is named),
            or its weights hold NaN/inf (a diverged run's model never predicts).
    """
    check_model_directory(model_dir)
    with hub_errors(model_dir):
        classifier = pipeline("text-classification", model=str(model_dir), device=device, **kwargs)
    check_finite_weights(classifier.model, model_dir)
    return classifier


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


def _check_input_columns(table: pa.Table, source: Path, text_column: str, taken: list[str]) -> None:
    """The text column must be there, and no column may have a name the predictions take."""
    columns = table.column_names
    if text_column not in columns:
        raise DataError(
            f"{source}: no column '{text_column}' (columns: {', '.join(columns)}){separator_hint(source)}; "
            "give the text column with --text_column"
        )
    for name in taken:
        if name in columns:
            raise DataError(f"{source}: already has a column '{name}', where predictions would go; rename that column")


def _check_tsv_cells(table: pa.Table, source: Path) -> None:
    """A TSV (no quoting) cannot hold a tab or a line break inside a value."""
    for name, column in zip(table.column_names, table.columns, strict=True):
        for row, value in enumerate(column.to_pylist()):
            if isinstance(value, str) and any(char in value for char in "\t\n\r"):
                raise DataError(
                    f"{source}: row {row + 1}, column '{name}' holds a tab or line break, which a .tsv cannot "
                    "hold: name --output .csv, .jsonl or .parquet"
                )


def _prediction_columns(scores: list[list[dict]], labels: list[str], top_k: int) -> dict[str, list]:
    """`predicted_label` and `score`, and `score_<label>` for every label if `top_k`: that label's
    probability where it is among the row's `top_k` best, None elsewhere."""
    columns = {PREDICTED_LABEL: [row[0]["label"] for row in scores], SCORE: [row[0]["score"] for row in scores]}
    for label in labels if top_k else []:
        columns[f"{SCORE}_{label}"] = []
    for row in scores if top_k else []:
        best = {prediction["label"]: prediction["score"] for prediction in row[:top_k]}
        for label in labels:
            columns[f"{SCORE}_{label}"].append(best.get(label))
    return columns


def _cell(value, prediction: bool) -> str:
    """A value as a CSV/TSV field: None empty, lists and dicts as JSON, scores to 6 decimals."""
    if value is None:
        return ""
    if prediction and isinstance(value, float):
        return f"{value:.6f}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _write_rows(table: pa.Table, predictions: dict[str, list], path: str, suffix: str) -> None:
    """Write the input's columns, then the predictions', in the format `suffix` names."""
    if suffix == ".parquet":
        # The `datasets` features in the metadata would not list the prediction columns.
        table = table.replace_schema_metadata(None)
        for name, values in predictions.items():
            kind = pa.string() if name == PREDICTED_LABEL else pa.float64()  # float even where all are empty
            table = table.append_column(name, pa.array(values, type=kind))
        pq.write_table(table, path)
    elif suffix in (".jsonl", ".json"):  # JSON Lines either way: one object per input row
        with open(path, "w", encoding="utf-8") as file:
            for index, row in enumerate(table.to_pylist()):
                row.update({name: values[index] for name, values in predictions.items()})
                file.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    else:
        header = [*table.column_names, *predictions]
        columns = [(column.to_pylist(), False) for column in table.columns]
        columns += [(values, True) for values in predictions.values()]
        rows = ([_cell(values[i], prediction) for values, prediction in columns] for i in range(table.num_rows))
        if suffix == ".tsv":  # no quoting, as `read_table` reads a .tsv
            with open(path, "w", encoding="utf-8", newline="") as file:
                file.writelines("\t".join(cells) + "\n" for cells in [header, *rows])
        else:  # utf-8-sig: Excel then opens the Chinese texts correctly
            with open(path, "w", encoding="utf-8-sig", newline="") as file:
                csv.writer(file).writerows([header, *rows])


def _write_atomically(table: pa.Table, predictions: dict[str, list], output_file: Path) -> None:
    """Write to a temporary file beside `output_file`, then rename: no half-written output."""
    with atomic_path(output_file) as temporary:
        _write_rows(table, predictions, str(temporary), output_file.suffix.lower())


def write_predictions(dataset, probabilities, config, path: str | os.PathLike) -> None:
    """A labelled split's texts and labels with the predicted label and its score, as CSV (atomically).

    Args:
        dataset: Rows with `text` and integer `label`, in the order of `probabilities`.
        probabilities: Class probabilities, one row per text.
        config: The model config (`id2label`).
        path: The CSV file to write.
    """
    labels = [config.id2label[i] for i in range(len(config.id2label))]
    table = pa.table({"text": dataset["text"], "label": [labels[i] for i in dataset["label"]]})
    best = probabilities.argmax(-1)
    predictions = {PREDICTED_LABEL: [labels[i] for i in best], SCORE: probabilities.max(-1).astype(float).tolist()}
    _write_atomically(table, predictions, Path(path))


def predict_file(
    model_dir: str | os.PathLike,
    input_file: str | os.PathLike,
    output_file: str | os.PathLike,
    *,
    text_column: str = "text",
    batch_size: int = 64,
    top_k: int | str | None = None,
    encoding: str | None = None,
) -> int:
    """Label every row of `input_file` and write its columns, unchanged, plus the predictions.

    The input's values are written back as read: CSV/TSV fields as strings ("007" stays "007",
    empty stays empty), JSON and parquet values with their types (ints with nulls stay ints).
    Missing or empty texts get a prediction too (the model's answer for no words), so the output
    has exactly one row per input row. It is written to a temporary file and renamed.

    Args:
        model_dir: A saved model directory (or Hub id).
        input_file: A table `read_table` reads (csv, tsv, json, jsonl, parquet, saved dataset).
        output_file: Where to write; its extension picks the format: .csv (UTF-8 with BOM), .tsv,
            .jsonl or .json (JSON Lines) or .parquet. Never the input file.
        text_column: The input column holding the texts.
        batch_size: Texts per forward pass.
        top_k: None, or an int K or "all": also a `score_<label>` column per label, holding that
            label's probability in the rows where it is among the K best (empty elsewhere).
        encoding: The input's encoding (e.g. "big5"); None: UTF-8, else detected and logged.

    Returns:
        The number of rows written.

    Raises:
        DataError: The input is missing or unreadable, lacks `text_column` or already has a
            `predicted_label`, `score` or `score_<label>` column; or `output_file` is the input
            or has an unknown extension (the message names `--output`).
    """
    input_file, output_file = Path(input_file), Path(output_file)
    _check_output_path(input_file, output_file)
    table = read_table(input_file, encoding=encoding, as_written=True).with_format("arrow")[:]
    _check_input_columns(table, input_file, text_column, [PREDICTED_LABEL, SCORE])
    if output_file.suffix.lower() == ".tsv":
        _check_tsv_cells(table, input_file)
    classifier = load_classifier(model_dir)
    id2label = classifier.model.config.id2label
    labels = [id2label[index] for index in sorted(id2label)]
    top_k = _top_k_count(top_k, len(labels))
    _check_input_columns(table, input_file, text_column, [f"{SCORE}_{label}" for label in labels] if top_k else [])
    texts = ["" if text is None else str(text) for text in table[text_column].to_pylist()]
    scores = []
    for start in tqdm(range(0, len(texts), batch_size), desc="Predicting", unit="batch"):
        scores += classifier(texts[start : start + batch_size], batch_size=batch_size, top_k=None)
    _write_atomically(table, _prediction_columns(scores, labels, top_k), output_file)
    logger.info("Wrote %d predictions to %s", len(scores), output_file)
    return len(scores)


@torch.no_grad()
def explain(model, tokenizer, texts: list[str]) -> list[dict]:
    """Each text's predicted label and score, its tokens and the attention pooling's weight on each.

    Args:
        model: A BiLSTM-attention classifier (its `attentions` output holds the pooling weights).
        tokenizer: Its tokenizer.
        texts: Texts to explain.

    Returns:
        Dicts with `text`, `label`, `score`, `tokens`, `weights`.
    """
    model.eval()
    results = []
    for text in texts:
        inputs = tokenizer(text, return_tensors="pt").to(model.device)
        outputs = model(**inputs, output_attentions=True)
        probabilities = outputs.logits.softmax(-1)[0]
        label_id = int(probabilities.argmax())
        tokens = tokenizer.convert_ids_to_tokens(inputs["input_ids"][0].tolist())
        # Show the words as written, not [UNK]: the segmentation is the same one the ids came from.
        if hasattr(tokenizer, "segment"):
            words = tokenizer.words_to_tokens(tokenizer.segment(text))[: len(tokens)]
        else:
            words = tokens
        results.append(
            {
                "text": text,
                "label": model.config.id2label[label_id],
                "score": float(probabilities[label_id]),
                "tokens": words,
                "weights": outputs.attentions[0][0, : len(tokens)].tolist(),
            }
        )
    return results


def load_for_explain(model_dir: str | os.PathLike):
    """Model and tokenizer from a saved directory, for `explain`: those of `load_classifier`, checked alike."""
    classifier = load_classifier(model_dir)
    return classifier.model, classifier.tokenizer
