"""What a saved model costs to serve: texts/s and size on disk, `finetune predict` and ONNX int8, side by side.

    python scripts/bench_models.py --model e5=runs/e5-seed42 --model student=runs/distilled-seed42 --threads 2
    python scripts/bench_models.py --model mine=outputs/word2vec_bilstm_attn --data ../shared/data/thucnews_titles

For each `NAME=DIR` (a saved classifier: a run's output directory), on the test texts of the benchmark's
split (`load_data` with seed 42, as `scripts/benchmark.py` tests; `--max_texts` of them):
- parameters and the weights' size on disk (model.safetensors, or a LoRA adapter with its base);
- `finetune predict` (`predict_file`, timed in a fresh process: load, CSV read and write included) in float32,
  and with `--bf16` where the CPU has native bfloat16 (AVX512-BF16 or AMX);
- `finetune export --quantize int8`, then `OnnxClassifier` on model_int8.onnx: texts/s, test accuracy (the
  int8 graph's, beside PyTorch's), single-text latency p50 in a fresh process, and the int8 file's size;
- each model's texts/s as a multiple of the first model's (the teacher, say).
Rates are medians of `--repeats` runs after a warm-up (`scripts/bench_speed_measuring.py`). Prints a
markdown table; `--output` keeps the numbers as JSON.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from finetune.errors import ArgumentError, report_errors  # noqa: E402
from scripts.bench_speed_prediction import onnx_prediction_rows, predict_file_prediction  # noqa: E402

SPLIT_SEED = 42  # scripts/benchmark.py's: the same test texts


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, metavar="NAME=DIR", help="a saved model (repeat)")
    parser.add_argument("--data", default="default", help="'default' (the embedded reviews) or a folder of CSVs")
    parser.add_argument("--max_texts", type=int, default=2000, help="test texts timed (the first of the split)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads and onnxruntime's (default: their own)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each; the median is reported")
    parser.add_argument("--latency_calls", type=int, default=100, help="single-text calls for ONNX int8's p50")
    parser.add_argument("--predict_batch_size", type=int, default=64, help="texts per batch of finetune predict")
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    models = {}
    for spec in args.model:
        name, _, directory = spec.partition("=")
        if not name or not directory or name in models:
            raise ArgumentError(f"--model {spec}: give NAME=DIR with a new name")
        if not Path(directory).is_dir():
            raise ArgumentError(f"--model {spec}: {directory} is not a directory")
        models[name] = Path(directory)
    args.models = models
    return args


def test_texts(data: str, max_texts: int) -> tuple[list[str], list[str]]:
    """The benchmark's test texts and their label names."""
    from finetune.config.arguments import DataArguments
    from finetune.data.loading import load_data

    files = {}
    if data != "default":
        folder = Path(data)
        files = {key: str(folder / f"{stem}.csv") for key, stem in
                 (("train_file", "train"), ("validation_file", "dev"), ("test_file", "test"))}  # fmt: skip
    splits, info = load_data(DataArguments(**files), SPLIT_SEED)
    test = splits["test"].select(range(min(max_texts, len(splits["test"]))))
    return list(test["text"]), [info["id2label"][int(label)] for label in test["label"]]


def weights(directory: Path) -> dict:
    """Parameters and the size on disk of the model's weights (safetensors files; a LoRA adapter's base's too)."""
    from safetensors import safe_open

    files = sorted(directory.glob("*.safetensors"))
    adapter = directory / "adapter_config.json"
    if adapter.is_file():
        base = Path(json.loads(adapter.read_text(encoding="utf-8"))["base_model_name_or_path"])
        files += sorted(base.glob("*.safetensors")) if base.is_dir() else []
    count = 0
    for file in files:
        with safe_open(file, "pt") as tensors:
            count += sum(int(np.prod(tensors.get_slice(key).get_shape())) for key in tensors.keys())
    return {"parameters": count, "weights_mb": sum(file.stat().st_size for file in files) / 1e6}


def model_labels(directory: Path) -> list[str]:
    """The model's labels in its own id order (the columns of its logits)."""
    from transformers import AutoConfig

    import finetune  # noqa: F401  (registers the toolkit's config with AutoConfig)

    id2label = AutoConfig.from_pretrained(directory).id2label
    return [str(id2label[i]) for i in range(len(id2label))]


def torch_accuracy(directory: Path, texts: list[str], gold: list[str], batch_size: int) -> float:
    """Test accuracy of the PyTorch model (`load_classifier`, as `finetune predict` loads it)."""
    from finetune.inference.classifier import load_classifier

    classifier = load_classifier(directory)
    predicted = [best["label"] for best in classifier(texts, batch_size=batch_size)]  # the top label of each text
    return float(np.mean([p == g for p, g in zip(predicted, gold, strict=True)]))


def measure(name: str, directory: Path, texts: list[str], gold: list[str], work: Path, args) -> dict:
    """One model's row: weights, PyTorch accuracy, finetune predict (float32, bf16), ONNX int8."""
    from finetune.devices import cpu_has_native_bf16

    print(f"{name}: {directory}", file=sys.stderr, flush=True)
    row = {"name": name, "directory": str(directory), **weights(directory)}
    row["test_accuracy"] = torch_accuracy(directory, texts, gold, args.predict_batch_size)
    row["predict"] = predict_file_prediction(directory, texts, work, args)
    if cpu_has_native_bf16() or torch.cuda.is_available():
        row["predict_bf16"] = predict_file_prediction(directory, texts, work, args, bf16=True)
    label_ids = {label: i for i, label in enumerate(model_labels(directory))}
    onnx = onnx_prediction_rows(directory, texts, [label_ids[g] for g in gold], work / name, args)
    row["onnx_int8"] = onnx["onnx_int8"]
    row["fp32_max_abs_logit_difference"] = onnx["fp32_max_abs_logit_difference"]
    return row


def markdown(rows: list[dict], texts: int) -> str:
    first = rows[0]
    lines = [
        f"| model | parameters | weights MB | test accuracy (PyTorch / int8) | finetune predict texts/s "
        f"| bf16 texts/s | ONNX int8 texts/s | int8 MB | int8 p50 ms | texts/s vs {first['name']} (predict / int8) |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        bf16 = f"{row['predict_bf16']['texts_per_second']:,.0f}" if "predict_bf16" in row else "n/a"
        int8 = row["onnx_int8"]
        ratio = (row["predict"]["texts_per_second"] / first["predict"]["texts_per_second"],
                 int8["texts_per_second"] / first["onnx_int8"]["texts_per_second"])  # fmt: skip
        lines.append(
            f"| {row['name']} | {row['parameters'] / 1e6:.2f}M | {row['weights_mb']:.1f} "
            f"| {row['test_accuracy']:.4f} / {int8['test_accuracy']:.4f} | {row['predict']['texts_per_second']:,.0f} "
            f"| {bf16} | {int8['texts_per_second']:,.0f} | {int8['size_mb']:.1f} | {int8['p50_ms']:.2f} "
            f"| {ratio[0]:.1f}x / {ratio[1]:.1f}x |"
        )
    return "\n".join(lines) + f"\n\n{texts:,} test texts; medians of the timed runs after a warm-up."


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    texts, gold = test_texts(args.data, args.max_texts)
    with tempfile.TemporaryDirectory(prefix="bench-models-") as scratch:
        rows = []
        for name, directory in args.models.items():
            (Path(scratch) / name).mkdir()
            rows.append(measure(name, directory, texts, gold, Path(scratch), args))
    table = markdown(rows, len(texts))
    print(table)
    if args.output:
        args.output.write_text(json.dumps({"texts": len(texts), "rows": rows, "table": table}, indent=1), "utf-8")
    return rows


if __name__ == "__main__":
    report_errors("bench_models.py")(main)()
