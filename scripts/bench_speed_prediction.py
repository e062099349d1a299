"""The toolkit's prediction phases of `scripts/bench_speed.py`: `pipeline()`, `finetune predict` (timed in a
fresh process, as the command runs) and the exported model under onnxruntime, each as one row of texts/s,
test accuracy, single-text latency (in a fresh process of its own, as a server's) and memory. Its own module
beside the plain loop's and the measuring's.
"""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from scripts.bench_speed_measuring import PeakRSS, latency_ms, median_rate
from scripts.bench_speed_plain import load_plain, predict_plain

ROOT = Path(__file__).resolve().parents[1]


def prediction_row(load, texts: list[str], gold: list[int], args) -> dict:
    """texts/s (median of repeats) and test accuracy of what `load()` gives: `predict(texts, batch_size)` ->
    label ids. Loading counts in the memory."""
    batch = args.predict_batch_size
    with PeakRSS() as memory:
        predict = load()
        predict(texts[:batch], batch)  # warm-up
        rate, seconds, predicted = median_rate(lambda: predict(texts, batch), len(texts), args.repeats)
    accuracy = float(np.mean(np.array(predicted) == np.array(gold)))
    return {"texts_per_second": rate, "seconds": seconds, "test_accuracy": accuracy, **memory.report()}


def single_text_latency(kind: str, path: Path, texts: list[str], work: Path, args, bf16: bool = False) -> dict:
    """p50/p95 ms of one text a call (`latency_ms`, the first `--latency_calls` texts) in a fresh Python process
    that has loaded only this model, as a server has. This benchmark's own process, after three trainings and
    the throughput runs, answered slower: `pipeline()` 1.84 ms p50 there, 1.55 in a fresh process; the plain
    loop 1.14 and 0.93 (two runs in one sitting). `kind`: `timed_single_texts`'."""
    single = texts_csv(texts[: args.latency_calls], work, "single_texts.csv")
    options = {"kind": kind, "path": str(path), "texts_csv": str(single), "bf16": bf16, "calls": args.latency_calls,
               "threads": args.threads}  # fmt: skip
    return in_fresh_process("timed_single_texts", options, work)


def pipeline_classifier(run_dir: Path, bf16: bool = False):
    """`pipeline("text-classification", model=RUN)`, as a user loads the toolkit's model (`bf16`: with
    `dtype=torch.bfloat16`)."""
    from transformers import pipeline

    import finetune  # noqa: F401  (registers the model with the Auto classes, as a user's script imports it)

    options = {"dtype": torch.bfloat16} if bf16 else {}
    return pipeline("text-classification", model=str(run_dir), **options)


def pipeline_predictor(run_dir: Path, bf16: bool = False):
    """`predict(texts, batch_size)` -> label ids of `pipeline_classifier`."""
    classifier = pipeline_classifier(run_dir, bf16)
    label2id = classifier.model.config.label2id

    def predict(texts, batch_size):
        return [label2id[p["label"]] for p in classifier(texts, batch_size=batch_size)]

    return predict


def predict_file_prediction(
    run_dir: Path, texts: list[str], work: Path, args, bf16: bool = False, backend: str = "pytorch"
) -> dict:
    """`predict_file` (what `finetune predict` runs, `--bf16` or `--backend` too) on a CSV of the texts: load,
    read, predict, write; onnxruntime at its own default batch size. Timed in a fresh Python process, as
    `finetune predict` runs (imports apart)."""
    batch_size = args.predict_batch_size if backend == "pytorch" else None
    options = {"run_dir": str(run_dir), "texts_csv": str(texts_csv(texts, work)), "batch_size": batch_size,
               "bf16": bf16, "backend": backend, "repeats": args.repeats, "threads": args.threads}  # fmt: skip
    return in_fresh_process("timed_predict_file", options, work)


def batched_pipeline_prediction(run_dir: Path, texts: list[str], work: Path, args, bf16: bool, num_proc: int) -> dict:
    """`load_classifier(RUN)(texts, num_proc=...)`, its BatchedTextClassificationPipeline on a list, timed in
    a fresh Python process, as a script that loads the model and labels its texts runs (imports apart)."""
    options = {"run_dir": str(run_dir), "texts_csv": str(texts_csv(texts, work)), "bf16": bf16,
               "batch_size": args.predict_batch_size, "num_proc": num_proc, "repeats": args.repeats,
               "threads": args.threads}  # fmt: skip
    return in_fresh_process("timed_batched_pipeline", options, work)


def texts_csv(texts: list[str], work: Path, name: str = "texts.csv") -> Path:
    path = work / name
    with open(path, "w", encoding="utf-8", newline="") as file:
        csv.writer(file).writerows([["text"], *([text] for text in texts)])
    return path


def read_texts(path) -> list[str]:
    """`texts_csv`'s texts back."""
    with open(path, encoding="utf-8", newline="") as file:
        return [row[0] for row in list(csv.reader(file))[1:]]


def in_fresh_process(function: str, options: dict, work: Path) -> dict:
    """This module's `function(**options)` in a new Python process. Where the toolkit forks workers, forked from
    this one they would inherit oneDNN's kernel cache filled by the phases before (bf16 `finetune predict`:
    6,100 -> 4,800 rows/s after bf16 pipeline(); BatchedTextClassificationPipeline with 2 processes in float32:
    4,202 texts/s in a fresh process, 3,506 forked from this one, in two runs of the benchmark)."""
    code = f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); import scripts.bench_speed_prediction as phases; "
    code += f"print(json.dumps(phases.{function}(**json.loads(sys.argv[1]))))"
    done = subprocess.run([sys.executable, "-c", code, json.dumps(options)], capture_output=True, text=True, cwd=work)
    if done.returncode:
        raise RuntimeError(f"{function}'s timing process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def timed_predict_file(run_dir, texts_csv, batch_size, bf16, backend, repeats, threads) -> dict:
    """`predict_file` once under `PeakRSS` (with its workers' memory: sampling them costs time) and then
    `repeats` times for the median rows/s."""
    from finetune.inference.file_labelling import predict_file

    if threads:
        torch.set_num_threads(threads)
    output = Path(texts_csv).with_name("predictions.csv")

    def run():
        return predict_file(run_dir, texts_csv, output, batch_size=batch_size, bf16=bf16, backend=backend)

    with PeakRSS(children=True) as memory:
        count = run()  # the warm-up run: the same work, its memory
    rate, seconds, _ = median_rate(run, count, repeats)
    return {"texts_per_second": rate, "seconds": seconds, **memory.report()}


def timed_batched_pipeline(run_dir, texts_csv, bf16, batch_size, num_proc, repeats, threads) -> dict:
    """`load_classifier` and a call on the CSV's texts under `PeakRSS` (with the workers' memory), then `repeats`
    calls for the median texts/s."""
    from finetune.inference.classifier import load_classifier

    if threads:
        torch.set_num_threads(threads)
    texts = read_texts(texts_csv)

    def run():
        classifier(texts, batch_size=batch_size, num_proc=num_proc)
        return len(texts)

    with PeakRSS(children=True) as memory:
        classifier = load_classifier(run_dir, bf16=bf16)
        run()  # the warm-up run: the same work, its memory
    rate, seconds, _ = median_rate(run, len(texts), repeats)
    return {"texts_per_second": rate, "seconds": seconds, **memory.report()}


def timed_single_texts(kind, path, texts_csv, bf16, calls, threads) -> dict:
    """`latency_ms` of one model, loaded alone: `kind` "plain" (`save_plain`'s file), "pipeline" (transformers'
    pipeline()), "load_classifier" (its BatchedTextClassificationPipeline), "onnx_fp32" / "onnx_int8"
    (OnnxClassifier on an exported directory)."""
    if threads:
        torch.set_num_threads(threads)
    if kind == "plain":
        model, index = load_plain(Path(path))

        def classify(text):
            return predict_plain(model, index, [text], 1)

    elif kind == "pipeline":
        classify = pipeline_classifier(path, bf16)
    elif kind == "load_classifier":
        from finetune.inference.classifier import load_classifier

        classify = load_classifier(path, bf16=bf16)
    else:
        from finetune.inference.onnx_classifier import OnnxClassifier

        classify = OnnxClassifier(path, quantized={"onnx_fp32": False, "onnx_int8": True}[kind], threads=threads)
    return latency_ms(classify, read_texts(texts_csv), calls)


def onnx_prediction_rows(run_dir: Path, texts: list[str], gold: list[int], work: Path, args) -> dict:
    """`finetune export --quantize int8` of the recipe's run, then `OnnxClassifier` on model.onnx and
    model_int8.onnx: the prediction row of each (as `pipeline()`'s, same texts and batch size), with
    the file's size on disk and the fp32 graph's logit difference from PyTorch at export."""
    from finetune.inference.export import export_onnx
    from finetune.inference.onnx_classifier import OnnxClassifier

    summary = export_onnx(run_dir, work / "exported", quantize="int8")
    directory = Path(summary["directory"])
    rows = {}
    for key, file, quantized in (("onnx_fp32", "model.onnx", False), ("onnx_int8", "model_int8.onnx", True)):

        def load(quantized=quantized):
            classifier = OnnxClassifier(directory, quantized=quantized, threads=args.threads)
            label2id = {label: i for i, label in enumerate(classifier.labels)}

            def predict(texts, batch_size):  # OnnxClassifier's own batch size: onnxruntime's LSTM likes small ones
                return [label2id[p["label"]] for p in classifier(texts)]

            return predict

        single = single_text_latency(key, directory, texts, work, args)
        rows[key] = {**prediction_row(load, texts, gold, args), **single, "file": file,
                     "size_mb": (directory / file).stat().st_size / 1e6}  # fmt: skip
    rows["predict_file_onnx_int8"] = predict_file_prediction(directory, texts, work, args, backend="onnx_int8")
    rows["fp32_max_abs_logit_difference"] = summary["fp32_max_abs_logit_difference"]
    return rows
