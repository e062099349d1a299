"""The toolkit's prediction phases of `scripts/bench_speed.py`: `pipeline()`, `finetune predict` (timed in a
fresh process, as the command runs) and the exported model under onnxruntime, each as one row of texts/s,
test accuracy, single-text latency and memory. Its own module beside the plain loop's and the measuring's.
"""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from scripts.bench_speed_measuring import PeakRSS, latency_ms, median_rate

ROOT = Path(__file__).resolve().parents[1]


def prediction_row(load, texts: list[str], gold: list[int], args) -> dict:
    """texts/s (median of repeats), test accuracy and single-text latency of what `load()` gives:
    `predict(texts, batch_size)` -> label ids, and `classify(text)`. Loading counts in the memory."""
    batch = args.predict_batch_size
    with PeakRSS() as memory:
        predict, classify = load()
        predict(texts[:batch], batch)  # warm-up
        rate, seconds, predicted = median_rate(lambda: predict(texts, batch), len(texts), args.repeats)
        single = latency_ms(classify, texts, args.latency_calls)
    accuracy = float(np.mean(np.array(predicted) == np.array(gold)))
    return {"texts_per_second": rate, "seconds": seconds, "test_accuracy": accuracy, **single, **memory.report()}


def pipeline_predictor(run_dir: Path, bf16: bool = False, batched: bool = False, num_proc: int = 1):
    """`pipeline("text-classification", model=RUN/best)`, as a user loads the toolkit's model (`bf16`: with
    `dtype=torch.bfloat16`); `batched`: `load_classifier(RUN/best)`, its BatchedTextClassificationPipeline,
    called with `num_proc`."""
    from transformers import pipeline

    from finetune.inference import load_classifier

    if batched:
        classifier, options = load_classifier(run_dir, bf16=bf16), {"num_proc": num_proc}
    else:
        dtype = {"dtype": torch.bfloat16} if bf16 else {}
        classifier, options = pipeline("text-classification", model=str(run_dir), **dtype), {}
    label2id = classifier.model.config.label2id

    def predict(texts, batch_size):
        return [label2id[p["label"]] for p in classifier(texts, batch_size=batch_size, **options)]

    return predict, classifier


def predict_file_prediction(
    run_dir: Path, texts: list[str], work: Path, args, bf16: bool = False, backend: str = "pytorch"
) -> dict:
    """`predict_file` (what `finetune predict` runs, `--bf16` or `--backend` too) on a CSV of the texts: load,
    read, predict, write; onnxruntime at its own default batch size. Timed in a fresh Python process, as
    `finetune predict` runs (imports apart): its workers are forked from it, and forked from this one
    they would inherit oneDNN's kernel cache filled by the phases before (bf16 pipeline(): 6,100 -> 4,800
    rows/s)."""
    texts_csv = work / "texts.csv"
    with open(texts_csv, "w", encoding="utf-8", newline="") as file:
        csv.writer(file).writerows([["text"], *([text] for text in texts)])
    batch_size = args.predict_batch_size if backend == "pytorch" else None
    options = {"run_dir": str(run_dir), "texts_csv": str(texts_csv), "batch_size": batch_size, "bf16": bf16,
               "backend": backend, "repeats": args.repeats, "threads": args.threads}  # fmt: skip
    code = f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); "
    code += "from scripts.bench_speed_prediction import timed_predict_file; "
    code += "print(json.dumps(timed_predict_file(**json.loads(sys.argv[1]))))"
    done = subprocess.run([sys.executable, "-c", code, json.dumps(options)], capture_output=True, text=True, cwd=work)
    if done.returncode:
        raise RuntimeError(f"finetune predict's timing process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def timed_predict_file(run_dir, texts_csv, batch_size, bf16, backend, repeats, threads) -> dict:
    """`predict_file` once under `PeakRSS` (with its workers' memory: sampling them costs time) and then
    `repeats` times for the median rows/s."""
    from finetune.inference import predict_file

    if threads:
        torch.set_num_threads(threads)
    output = Path(texts_csv).with_name("predictions.csv")

    def run():
        return predict_file(run_dir, texts_csv, output, batch_size=batch_size, bf16=bf16, backend=backend)

    with PeakRSS(children=True) as memory:
        count = run()  # the warm-up run: the same work, its memory
    rate, seconds, _ = median_rate(run, count, repeats)
    return {"texts_per_second": rate, "seconds": seconds, **memory.report()}


def onnx_prediction_rows(run_dir: Path, texts: list[str], gold: list[int], work: Path, args) -> dict:
    """`finetune export --quantize int8` of the recipe's run, then `OnnxClassifier` on model.onnx and
    model_int8.onnx: the prediction row of each (as `pipeline()`'s, same texts and batch size), with
    the file's size on disk and the fp32 graph's logit difference from PyTorch at export."""
    from finetune.export import export_onnx
    from finetune.onnx_classifier import OnnxClassifier

    summary = export_onnx(run_dir, work / "exported", quantize="int8")
    directory = Path(summary["directory"])
    rows = {}
    for key, file, quantized in (("onnx_fp32", "model.onnx", False), ("onnx_int8", "model_int8.onnx", True)):

        def load(quantized=quantized):
            classifier = OnnxClassifier(directory, quantized=quantized, threads=args.threads)
            label2id = {label: i for i, label in enumerate(classifier.labels)}

            def predict(texts, batch_size):  # OnnxClassifier's own batch size: onnxruntime's LSTM likes small ones
                return [label2id[p["label"]] for p in classifier(texts)]

            return predict, classifier

        rows[key] = {**prediction_row(load, texts, gold, args), "file": file,
                     "size_mb": (directory / file).stat().st_size / 1e6}  # fmt: skip
    rows["predict_file_onnx_int8"] = predict_file_prediction(directory, texts, work, args, backend="onnx_int8")
    rows["fp32_max_abs_logit_difference"] = summary["fp32_max_abs_logit_difference"]
    return rows
