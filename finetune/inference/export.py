"""Export a trained model to ONNX (and int8), to serve it with onnxruntime and no PyTorch.

    finetune export runs/reviews [--output DIR] [--quantize int8] [--opset 17]

writes `DIR/onnx/` (default `DIR`: the model directory itself, a run's OUTPUT_DIR): `model.onnx` (fp32; inputs
`input_ids` and `attention_mask`, int64, of shape (batch, sequence), both axes dynamic; output
`logits`; a model with a TF-IDF branch also takes `ngram_ids`, int64, and `ngram_weights`, float32,
of shape (batch, n-grams)), with `--quantize int8` also `model_int8.onnx` (onnxruntime's dynamic quantization:
int8 weights, activations quantized on the fly), beside the tokenizer files and `config.json`.
`finetune.inference.onnx_classifier.OnnxClassifier` serves that folder.

The graph comes from the TorchScript exporter (`dynamo=False`): it turns each direction of the
BiLSTM into one ONNX `LSTM` node over a sequence of any length; the dynamo exporter needs
onnxscript and unrolls or refuses the recurrence. Before the folder is written, its logits are
compared with PyTorch's on a batch mixing empty, one-token, short and over-long texts.
"""

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from finetune.errors import ArgumentError, ModelDirectoryError
from finetune.files import atomic_directory, write_json_atomic
from finetune.inference.onnx_classifier import INT8_FILE, MODEL_FILE, ONNX_DIR
from finetune.model_files import check_model_directory, resolve_model_directory

logger = logging.getLogger(__name__)

INPUT_NAMES = ("input_ids", "attention_mask")
NGRAM_INPUT_NAMES = ("ngram_ids", "ngram_weights")  # a TF-IDF branch's (`tfidf_branch.py`)
DEFAULT_OPSET = 17
MIN_OPSET = 14  # the TorchScript exporter's LSTM and Trilu-free graph need 14+; onnxruntime reads up to 21
MAX_OPSET = 20
QUANTIZE_CHOICES = ("int8",)
PARITY_TOLERANCE = 1e-4
CHECK_TEXTS = [
    "",
    "好",
    "这部电影真的很棒！",
    "物流很快，包装也很好，五星好评",
    "质量太差了，用了两天就坏了，不推荐购买。" * 40,
]


class LogitsOnly(torch.nn.Module):
    """The classifier as a graph of two tensors in (four with a TF-IDF branch), logits out (no attentions, no dict)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *ngrams: torch.Tensor) -> torch.Tensor:
        ngram_inputs = dict(zip(NGRAM_INPUT_NAMES, ngrams, strict=False))
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **ngram_inputs).logits


def input_names(model) -> tuple[str, ...]:
    """The graph's inputs: the ids and mask, and the n-gram features where the model has a TF-IDF branch."""
    return INPUT_NAMES + (NGRAM_INPUT_NAMES if getattr(model.config, "tfidf_num_ngrams", 0) else ())


def load_merged(model_dir: Path):
    """The model of `model_dir` in eval mode, a LoRA adapter merged into its base; and its tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import finetune  # noqa: F401  (registers the model with the Auto classes)

    if (model_dir / "adapter_config.json").exists():
        from peft import AutoPeftModelForSequenceClassification

        model = AutoPeftModelForSequenceClassification.from_pretrained(model_dir).merge_and_unload()
    else:
        model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    return model.eval(), AutoTokenizer.from_pretrained(model_dir)


def check_batch(tokenizer, max_length: int) -> dict[str, np.ndarray]:
    """`CHECK_TEXTS` as the pipeline encodes them, padded into one batch: lengths 0, 1, short and,
    untruncated, beyond `max_length` (the graph itself cuts it, as the model does)."""
    from finetune.inference.batching import padded_batch

    encodings = [tokenizer(text, truncation=False, verbose=False) for text in CHECK_TEXTS]
    rows = [encoding["input_ids"] for encoding in encodings]
    rows += [[], rows[-1][:max_length]]  # no tokens at all (a BERT tokenizer adds [CLS] [SEP]); exactly max_length
    input_ids, attention_mask = padded_batch(rows, tokenizer.pad_token_id, tokenizer.padding_side)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if "ngram_ids" in encodings[0]:  # a TF-IDF branch: the n-grams of the same texts (cutting leaves them)
        texts = [*CHECK_TEXTS, "", CHECK_TEXTS[-1]]
        batch |= dict(zip(NGRAM_INPUT_NAMES, tokenizer.ngram_rows(texts).padded(np.arange(len(texts)))))
    return batch


def export_graph(model, path: Path, opset: int) -> None:
    """`torch.onnx.export` of the logits, batch and sequence axes dynamic."""
    example = (torch.tensor([[5, 6, 7], [8, 9, 0]]), torch.tensor([[1, 1, 1], [1, 1, 0]]))
    names = input_names(model)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    if len(names) > len(INPUT_NAMES):
        example += (torch.tensor([[1, 2], [3, 0]]), torch.tensor([[0.6, 0.8], [1.0, 0.0]]))
        axes |= {name: {0: "batch", 1: "ngrams"} for name in NGRAM_INPUT_NAMES}
    with warnings.catch_warnings():
        # The tracer notes the model's empty-batch branch (never taken on the example): callers
        # pad a batch to one step at least, as `OnnxClassifier` does.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            LogitsOnly(model).eval(),
            example,
            str(path),
            input_names=list(names),
            output_names=["logits"],
            dynamic_axes={**axes, "logits": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )


def quantize_int8(source: Path, target: Path) -> None:
    """onnxruntime dynamic quantization: int8 weights of LSTM, MatMul/Gemm and embedding Gather."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # onnxruntime logs (on the root logger) advice for static quantization of vision models; here it is noise.
    advice = logging.Filter()
    advice.filter = lambda record: "pre-processing before quantization" not in record.getMessage()
    logging.getLogger().addFilter(advice)
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    finally:
        logging.getLogger().removeFilter(advice)


def onnx_logits(path: Path, batch: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], batch)[0]


def export_onnx(
    model_dir: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    *,
    quantize: str | None = None,
    opset: int = DEFAULT_OPSET,
) -> dict:
    """Writes `OUTPUT/onnx/` (model.onnx, with `quantize="int8"` model_int8.onnx, tokenizer files,
    config.json, export.json) atomically: a failed export leaves a previous folder whole.

    Args:
        model_dir: A saved model (a run's OUTPUT_DIR; an earlier layout's run directory: its `best/`), a LoRA
            adapter's too (merged into its base first).
        output_dir: Where `onnx/` goes; None: `model_dir`.
        quantize: None, or "int8" for `model_int8.onnx` too.
        opset: The ONNX opset (14 to 20).

    Returns:
        What export.json holds: the folder, files and sizes, the fp32 graph's largest logit difference
        from PyTorch on the check batch, and (int8) how far the int8 logits moved.

    Raises:
        ArgumentError: `quantize` or `opset` is not one we export (names the flag), or the model scores
            windows of long texts (`long_text` windows: refused, no graph of it).
        ModelDirectoryError: `model_dir` is missing or incomplete, or the graph's logits differ
            from PyTorch's by more than 1e-4 (an export bug: nothing is written).
    """
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise ArgumentError(f"--quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got {quantize!r}")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ArgumentError(f"--opset must be between {MIN_OPSET} and {MAX_OPSET}, got {opset}")
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelDirectoryError(f"{model_dir}: no such model directory (give a run's OUTPUT_DIR)")
    model_dir = resolve_model_directory(model_dir)
    check_model_directory(model_dir)
    target = Path(output_dir if output_dir is not None else model_dir) / ONNX_DIR
    model, tokenizer = load_merged(model_dir)
    if getattr(model.config, "long_text", "truncate") == "windows":
        raise ArgumentError(
            f"{model_dir}: a model with long_text windows is not exported to ONNX (the graph scores one cut per "
            "text); serve it with finetune predict --backend pytorch"
        )
    batch = check_batch(tokenizer, model.config.max_length)
    with torch.no_grad():
        expected = model(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy()
    with atomic_directory(target) as staging:
        export_graph(model, staging / MODEL_FILE, opset)
        difference = float(np.abs(onnx_logits(staging / MODEL_FILE, batch) - expected).max())
        if not difference <= PARITY_TOLERANCE:
            raise ModelDirectoryError(
                f"{model_dir}: the ONNX graph's logits differ from PyTorch's by {difference:.2g} (> {PARITY_TOLERANCE})"
            )
        summary = {"opset": opset, "fp32_max_abs_logit_difference": difference, "files": {}}
        if quantize == "int8":
            quantize_int8(staging / MODEL_FILE, staging / INT8_FILE)
            moved = np.abs(onnx_logits(staging / INT8_FILE, batch) - expected).max()
            summary["int8_max_abs_logit_difference"] = float(moved)
        tokenizer.save_pretrained(staging)
        model.config.to_json_file(staging / "config.json")
        for name in sorted(os.listdir(staging)):
            if name.endswith(".py"):  # custom code save_pretrained copies: onnxruntime needs none
                (staging / name).unlink()
        summary["files"] = {name: (staging / name).stat().st_size for name in sorted(os.listdir(staging))}
        write_json_atomic(summary, staging / "export.json")
    logger.info("Wrote %s (fp32 logits within %.1e of PyTorch)", target, difference)
    return {"directory": str(target), **summary}
