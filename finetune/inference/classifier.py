"""Use a trained model: label a file of texts, show which words the attention pooling weighed."""

import logging
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from transformers import pipeline

from finetune.data.multilabel import config_thresholds, is_multi_label, predicted_label_sets
from finetune.devices import cpu_has_native_bf16
from finetune.errors import ArgumentError
from finetune.inference.batched_pipeline import BatchedTextClassificationPipeline
from finetune.inference.prediction_files import (
    PREDICTED_LABEL,
    SCORE,
    multilabel_prediction_columns,
    prediction_writer,
)
from finetune.inference.text_scores import predict_probabilities
from finetune.model_files import check_finite_weights, check_model_directory, hub_errors, resolve_model_directory
from finetune.models.bilstm_attention.long_text import LongText

logger = logging.getLogger(__name__)


def load_classifier(model_dir: str | os.PathLike, device: int | str | None = None, bf16: bool = False, **kwargs):
    """`pipeline("text-classification")` over a saved model directory (a run's OUTPUT_DIR; an earlier layout's
    run directory loads its `best/`) or Hub id: a BatchedTextClassificationPipeline.

    `bf16`: the model's weights in bfloat16 (`dtype=torch.bfloat16`; its TF-IDF branch stays float32), the
    fast path on CPUs with AVX512-BF16 or AMX and on GPUs; refused (ArgumentError) on other CPUs, whose
    oneDNN has no bfloat16 LSTM.

    Raises:
        ModelDirectoryError: The directory is missing, incomplete or damaged (the file is named),
            or its weights hold NaN/inf (a diverged run's model never predicts).
    """
    model_dir = resolve_model_directory(model_dir)
    check_model_directory(model_dir)
    if bf16:
        kwargs["dtype"] = torch.bfloat16
        on_cpu = str(device) in ("cpu", "-1") or (device is None and not torch.cuda.is_available())
        if on_cpu and not cpu_has_native_bf16():
            raise ArgumentError(
                "--bf16: this CPU has no native bfloat16 (AVX512-BF16 or AMX), so its LSTM kernels refuse it; "
                "predict in float32 (drop --bf16) or with --backend onnx_int8"
            )
    kwargs.setdefault("pipeline_class", BatchedTextClassificationPipeline)  # lists in length-sorted batches
    with hub_errors(model_dir):
        classifier = pipeline("text-classification", model=str(model_dir), device=device, **kwargs)
    check_finite_weights(classifier.model, model_dir)
    return classifier


def check_bf16_backend(bf16: bool, backend: str) -> None:
    """`--bf16` loads the PyTorch model in bfloat16; the ONNX backends have their own (int8) path."""
    if bf16 and backend != "pytorch":
        raise ArgumentError(f"--bf16 runs the PyTorch model, not --backend {backend} (int8: --backend onnx_int8)")


def write_predictions(dataset, probabilities, config, path: str | os.PathLike) -> None:
    """A labelled split's texts and labels with the predicted label and its score, as CSV (atomically).

    Args:
        dataset: Rows with `text` and integer `label`, in the order of `probabilities`.
        probabilities: Class probabilities, one row per text.
        config: The model config (`id2label`).
        path: The CSV file to write.
    """
    labels = [config.id2label[i] for i in range(len(config.id2label))]
    if is_multi_label(config):  # multi-hot labels: each row's label list, and every label's score
        truth = [[labels[i] for i in np.flatnonzero(row)] for row in np.asarray(dataset["label"])]
        with prediction_writer(Path(path)) as write:
            predictions = multilabel_prediction_columns(probabilities, labels, config_thresholds(config))
            write(pa.table({"text": dataset["text"], "label": truth}), predictions)
        return
    table = pa.table({"text": dataset["text"], "label": [labels[i] for i in dataset["label"]]})
    best = probabilities.argmax(-1)
    predictions = {PREDICTED_LABEL: [labels[i] for i in best], SCORE: probabilities.max(-1).astype(float).tolist()}
    with prediction_writer(Path(path)) as write:
        write(table, predictions)


def process_shard(row_count: int, accelerator) -> tuple[int, int]:
    """The rows this process labels: a contiguous share, so that the shares concatenate in input order."""
    if accelerator is None:
        return 0, row_count
    rank, processes = accelerator.process_index, accelerator.num_processes
    return row_count * rank // processes, row_count * (rank + 1) // processes


def text_scorer(model_dir, backend: str, batch_size: int, device, bf16: bool = False, threads=None) -> tuple:
    """`score(texts, progress) -> scores` of the chosen backend, the labels in id order, (multi-label
    models) the decision thresholds `config.json` holds, else None, and whether it runs on a CPU.
    `threads`: onnxruntime's intra-op threads (None: every core)."""
    check_bf16_backend(bf16, backend)
    if backend in ("onnx", "onnx_int8"):
        from finetune.inference.onnx_classifier import OnnxClassifier

        classifier = OnnxClassifier(model_dir, quantized=backend == "onnx_int8", threads=threads, batch_size=batch_size)
        return classifier.scores, classifier.labels, classifier.thresholds, True
    if backend != "pytorch":
        raise ArgumentError(f"--backend must be pytorch, onnx or onnx_int8, got {backend!r}")
    classifier = load_classifier(model_dir, device=device, bf16=bf16)
    model, tokenizer = classifier.model.eval(), classifier.tokenizer
    id2label = model.config.id2label

    def score(texts: list[str], progress) -> np.ndarray:
        return predict_probabilities(model, tokenizer, texts, batch_size, progress)

    thresholds = config_thresholds(model.config) if is_multi_label(model.config) else None
    return score, [id2label[index] for index in sorted(id2label)], thresholds, model.device.type == "cpu"


@torch.no_grad()
def explain(model, tokenizer, texts: list[str]) -> list[dict]:
    """Each text's predicted label and score, its tokens and the attention pooling's weight on each.

    Args:
        model: A BiLSTM-attention classifier (its `attentions` output holds the pooling weights).
        tokenizer: Its tokenizer.
        texts: Texts to explain.

    Returns:
        Dicts with `text`, `label` (multi-label: the labels above their thresholds, joined by ", "),
        `score` (of the best label), `tokens`, `weights`.
    """
    model.eval()
    results = []
    for text in texts:
        # Uncut, as pipeline() calls it: the model cuts a long text itself (config.json's long_text), below too
        inputs = tokenizer(text, return_tensors="pt", verbose=False).to(model.device)
        outputs = model(**inputs, output_attentions=True)
        multi_label = is_multi_label(model.config)
        probabilities = (outputs.logits.sigmoid() if multi_label else outputs.logits.softmax(-1))[0]
        label_id = int(probabilities.argmax())
        label = model.config.id2label[label_id]
        if multi_label:  # the labels at or above their thresholds
            chosen = predicted_label_sets(probabilities[None].cpu().numpy(), config_thresholds(model.config))[0]
            label = ", ".join(model.config.id2label[i] for i in np.flatnonzero(chosen)) or "(none)"
        tokens = tokenizer.convert_ids_to_tokens(inputs["input_ids"][0].tolist())
        # Show the words as written, not [UNK]: the segmentation is the same one the ids came from.
        if hasattr(tokenizer, "segment"):
            words = tokenizer.words_to_tokens(tokenizer.segment(text))
            tokens = words if len(words) == len(tokens) else words[: len(tokens)]
        long_text = LongText.of(model.config)
        if long_text.mode == "truncate":  # the tokens the model read: the head, the tail or both of a long text
            tokens = long_text.truncate(tokens)
        results.append(
            {
                "text": text,
                "label": label,
                "score": float(probabilities[label_id]),
                "tokens": tokens,
                "weights": outputs.attentions[0][0, : len(tokens)].tolist(),
            }
        )
    return results


def load_for_explain(model_dir: str | os.PathLike):
    """Model and tokenizer from a saved directory, for `explain`: those of `load_classifier`, checked alike."""
    classifier = load_classifier(model_dir)
    return classifier.model, classifier.tokenizer
