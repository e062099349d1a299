"""Use a trained model: label a file of texts, show which words the attention pooling weighed."""

import csv
import logging
import os
import tempfile
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from .data import read_table

logger = logging.getLogger(__name__)


def load_classifier(model_dir: str | os.PathLike, device: int | str | None = None, **kwargs):
    """`pipeline("text-classification")` over a saved model directory (or Hub id)."""
    return pipeline("text-classification", model=str(model_dir), device=device, **kwargs)


def predict_file(
    model_dir: str | os.PathLike,
    input_file: str | os.PathLike,
    output_file: str | os.PathLike,
    *,
    text_column: str = "text",
    batch_size: int = 64,
) -> int:
    """Labels every row of `input_file` and writes a CSV of the input columns plus `label`, `score`.

    Missing or empty texts get a prediction too (the model's answer for no words), so the output
    has exactly one row per input row. The CSV is written to a temporary file and renamed.

    Returns:
        The number of rows written.
    """
    table = read_table(input_file)
    if text_column not in table.column_names:
        raise ValueError(f"{input_file}: no column {text_column!r} (columns: {', '.join(table.column_names)})")
    classifier = load_classifier(model_dir)
    texts = ["" if text is None else str(text) for text in table[text_column]]
    predictions = []
    for start in tqdm(range(0, len(texts), batch_size), desc="Predicting", unit="batch"):
        predictions += classifier(texts[start : start + batch_size], batch_size=batch_size)
    output_file = Path(output_file)
    output_file.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=output_file.parent, suffix=".tmp", delete=False, encoding="utf-8-sig", newline=""
    ) as f:
        writer = csv.writer(f)
        writer.writerow([*table.column_names, "label", "score"])
        for row, prediction in zip(table, predictions):
            writer.writerow([*row.values(), prediction["label"], f"{prediction['score']:.6f}"])
    os.replace(f.name, output_file)
    logger.info("Wrote %d predictions to %s", len(predictions), output_file)
    return len(predictions)


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
        outputs = model(**inputs)
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
    """Model and tokenizer from a saved directory, for `explain`."""
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    return model, tokenizer
