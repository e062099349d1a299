"""scripts/benchmark.py on a tiny folder: 2 seeds of a tiny recipe and both baselines give the table, the
JSON and each run's seed spread (metrics.json and card); a second call reuses every run, a removed run
alone is trained again; mistakes in the input are one line."""

import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, SUBJECTS, make_reviews, write_csv

from finetune.errors import ArgumentError

SCRIPT = ROOT / "scripts" / "benchmark.py"
TITLES = ["TF-IDF char 1-3-gram + LR (C=", "fastText (words + hashed bigrams)", "recipe word2vec_bilstm_attn",
          "recipe word2vec_bilstm_attn, its BiLSTM alone (no TF-IDF branch)"]  # fmt: skip


def tiny_recipe_flags(vectors) -> str:
    """The recipe flags of `conftest.tiny_recipe_args` that the benchmark does not set itself."""
    return (
        f"--word_vectors {vectors} --lstm_hidden_size 16 --attention_dim 16 --num_train_epochs 3 "
        "--per_device_train_batch_size 16 --learning_rate 0.01 --logging_steps 5 --min_freq 1 --word_dropout 0 "
        "--early_stopping_patience 0 --adversarial_epsilon 0.1"
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    data = tmp_path_factory.mktemp("tiny_reviews")
    write_csv(data / "train.csv", make_reviews(60, seed=0))
    write_csv(data / "dev.csv", make_reviews(15, seed=1))
    write_csv(data / "test.csv", make_reviews(20, seed=2))
    return data


def run_benchmark(*flags, cwd):
    command = [sys.executable, str(SCRIPT), "--threads", "1", "--resamples", "300", *map(str, flags)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def table(output: str) -> list[list[str]]:
    lines = [line for line in output.splitlines() if line.startswith("|")]
    assert lines[0].startswith("| method | runs | test accuracy | test macro-F1 | accuracy − TF-IDF")
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def test_two_seeds_give_the_table_json_and_seed_spread_and_a_rerun_reuses_them(folder, tiny_vectors, tmp_path):
    runs_dir, output = tmp_path / "runs", tmp_path / "bench.json"
    flags = ["--datasets", folder, "--seeds", 2, "--runs_dir", runs_dir, "--output", output,
             "--max_train_samples", 80, "--max_eval_samples", 20, "--max_predict_samples", 30,
             "--recipe_args", tiny_recipe_flags(tiny_vectors)]  # fmt: skip
    printed = run_benchmark(*flags, cwd=tmp_path)
    rows = table(printed)
    assert len(rows) == 4 and all(row[0].startswith(title) for row, title in zip(rows, TITLES, strict=True))
    assert [row[1] for row in rows] == ["1", "2", "2", "2"]
    assert rows[0][4] == "—" and all("[" in row[4] and "±" in row[2] for row in rows[1:])
    assert f"### {folder.name}: train 80, validation 20, test 30" in printed

    results = json.loads(output.read_text(encoding="utf-8"))["datasets"][folder.name]
    assert len(results["test_labels"]) == 30
    assert [(run["method"], run["seed"]) for run in results["runs"]] == [
        ("tfidf_lr", 42), ("fasttext", 42), ("fasttext", 43), ("recipe", 42), ("recipe", 43), ("branchless", 42),
        ("branchless", 43)]  # fmt: skip
    assert not any("probabilities" in run for run in results["runs"])  # kept beside each run, not in the JSON
    for run in results["runs"]:
        correct = [p == label for p, label in zip(run["predicted"], results["test_labels"], strict=True)]
        assert run["test_accuracy"] == pytest.approx(sum(correct) / 30)
    assert results["runs"][0]["test_accuracy"] >= 0.9  # TF-IDF on templated reviews
    recipe = [run for run in results["runs"] if run["method"] == "recipe"]
    # The shipped config carries a TF-IDF branch: each run is also scored without it (its share set to 0), from
    # its best model's BiLSTM alone; no ensemble row (the model is one already)
    for run, alone in zip(recipe, results["runs"][5:], strict=True):
        probabilities = np.load(run["run_dir"] + ".alone.probabilities.npy")
        assert probabilities.shape == (30, 2) and alone["predicted"] == probabilities.argmax(-1).tolist()
        metrics = json.loads((Path(run["run_dir"]) / "metrics.json").read_text())
        assert run["fit_seconds"] == metrics["train_runtime_s"] + metrics["tfidf_branch"]["fit_seconds"]
    for run in recipe:
        assert Path(run["run_dir"]).name.startswith("word2vec_bilstm_attn-")
        metrics = json.loads((Path(run["run_dir"]) / "metrics.json").read_text())
        spread = metrics["seed_spread"]
        assert spread["seeds"] == [42, 43] and spread["this_seed"] == run["seed"]
        assert spread["test_accuracy"]["values"] == [r["test_accuracy"] for r in recipe]
        card = (Path(run["run_dir"]) / "README.md").read_text()
        assert f"this run (seed {run['seed']}) ranks {spread['rank']} of 2 by test accuracy" in card
        assert metrics["data"]["max_samples"]["test"]["rows"] == 30

    # Again, after a kill during seed 43's run (its metrics.json not yet written): that run resumes from its
    # last checkpoint; nothing else is trained (the other logs and the baselines' results are not rewritten)
    directory = runs_dir / folder.name
    run42, run43 = (Path(run["run_dir"]) for run in recipe)
    for name in ("metrics.json", "finished.json"):
        (run43 / name).unlink()
    kept = [run42.with_name(run42.name + ".log"), *directory.glob("tfidf_lr-*"), *directory.glob("fasttext-*")]
    times = {path: path.stat().st_mtime_ns for path in kept}
    log43 = run43.with_name(run43.name + ".log")
    written = log43.stat().st_mtime_ns
    again = run_benchmark(*flags, cwd=tmp_path)
    assert len(kept) == 4 and {path: path.stat().st_mtime_ns for path in kept} == times
    assert log43.stat().st_mtime_ns > written and "Resumed from" in log43.read_text()
    assert json.loads(run43.with_name(run43.name + ".json").read_text())["wall_seconds"] is None  # a part only
    assert [row[:5] for row in table(again)] == [row[:5] for row in rows]  # the resumed run's best model is the same
    assert json.loads((run43 / "metrics.json").read_text())["seed_spread"]["seeds"] == [42, 43]


def test_ensemble_rows_average_a_branchless_recipe_with_tfidf():
    script = load_script()
    labels = np.array([0, 1, 1, 0])
    tfidf = {"probabilities": [[0.9, 0.1], [0.4, 0.6], [0.45, 0.55], [0.2, 0.8]], "fit_seconds": 2.0,
             "wall_seconds": 3.0}  # fmt: skip
    recipe = [{"config": "c", "seed": 42, "title": "recipe c", "fit_seconds": 10.0, "wall_seconds": None}]
    probabilities = [np.array([[0.6, 0.4], [0.7, 0.3], [0.3, 0.7], [0.9, 0.1]])]
    (row,) = script.ensemble_runs(recipe, tfidf, labels, probabilities)
    # means: [.75 .25] [.55 .45] [.375 .625] [.55 .45] -> 0, 0, 1, 0: three of four right
    assert row["predicted"] == [0, 0, 1, 0] and row["test_accuracy"] == 0.75
    assert (row["method"], row["fit_seconds"], row["wall_seconds"]) == ("ensemble", 12.0, None)


def load_script():
    spec = importlib.util.spec_from_file_location("benchmark_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--datasets", "{tmp}/nowhere"], "--datasets {tmp}/nowhere: no such folder"),
        (["--datasets", "{tmp}/no_test"], "--datasets {tmp}/no_test: no test.csv"),
        (["--recipe_args", "--learnig_rate 0.1"], "unknown flag --learnig_rate (did you mean --learning_rate?)"),
        (["--recipe_args", "--seed 3"], "--recipe_args: --seed is set by the benchmark"),
        (["--seeds", "0"], "--seeds must be 1 or more"),
    ],
)
def test_mistakes_are_one_line(flags, message, folder, tmp_path, capsys):
    (tmp_path / "no_test").mkdir()
    for name in ("train.csv", "dev.csv"):
        (tmp_path / "no_test" / name).write_bytes((folder / name).read_bytes())
    argv = [flag.format(tmp=tmp_path) for flag in flags] + ["--runs_dir", str(tmp_path / "runs")]
    if "--datasets" not in flags:
        argv += ["--datasets", str(folder), "--methods", "tfidf_lr"]
    script = load_script()
    with pytest.raises(SystemExit) as exit_info:
        script.report_errors("benchmark.py")(script.main)(argv)
    error = capsys.readouterr().err.strip()
    assert exit_info.value.code == 1 and len(error.splitlines()) == 1
    assert error.startswith("benchmark.py: error: ") and message.format(tmp=tmp_path) in error


def test_runs_of_other_settings_or_changed_files_sit_beside_the_kept_ones(folder, tmp_path, capsys):
    script = load_script()
    argv = ["--datasets", str(folder), "--methods", "tfidf_lr", "--runs_dir", str(tmp_path / "runs")]
    first = script.main([*argv, "--max_predict_samples", "30"])
    assert script.main([*argv, "--max_predict_samples", "30"]) == first  # reused
    script.main([*argv, "--max_predict_samples", "20"])
    assert len(list((tmp_path / "runs" / folder.name).glob("tfidf_lr-*-seed42.json"))) == 2
    changed = tmp_path / "changed"
    changed.mkdir()
    for name in ("train.csv", "dev.csv", "test.csv"):
        (changed / name).write_bytes((folder / name).read_bytes())
    (changed / "test.csv").write_text((folder / "test.csv").read_text() + "新加的一条评论很好,positive\n")
    changed_argv = ["--datasets", str(changed), "--methods", "tfidf_lr", "--runs_dir", str(tmp_path / "runs")]
    script.main(changed_argv)
    (changed / "test.csv").write_text((folder / "test.csv").read_text())
    script.main(changed_argv)
    assert len(list((tmp_path / "runs" / "changed").glob("tfidf_lr-*-seed42.json"))) == 2


def test_several_configs_give_a_row_each_compared_with_the_first(folder, tiny_vectors, trained_run, tmp_path):
    """A variant of the shipped config and a distilled student (its recipe picked from its config) beside
    the shipped config: a row each, each variant's paired difference to the first config."""
    configs = ROOT / "recipes" / "configs"
    variant = tmp_path / "max_pooling.yaml"
    variant.write_text(
        (configs / "word2vec_bilstm_attn.yaml").read_text().replace("pooling: attention+mean", "pooling: attention+max")
    )
    student = tmp_path / "student.yaml"
    student.write_text(
        (configs / "distill_bilstm_attn.yaml").read_text().replace("teacher_model_name_or_path: null", "")
        + f"\nteacher_model_name_or_path: {trained_run}\naugment_copies: 1\n"
    )
    flags = ["--datasets", folder, "--seeds", 1, "--methods", "recipe", "tfidf_lr", "--runs_dir", tmp_path / "runs",
             "--config", configs / "word2vec_bilstm_attn.yaml", variant, student, "--max_train_samples", 80,
             "--max_eval_samples", 20, "--max_predict_samples", 30,
             "--recipe_args", tiny_recipe_flags(tiny_vectors)]  # fmt: skip
    printed = run_benchmark(*flags, cwd=tmp_path)
    header = next(line for line in printed.splitlines() if line.startswith("| method"))
    assert "| accuracy − recipe word2vec_bilstm_attn, points [95% CI] |" in header
    rows = table(printed)
    assert [row[0].split(" (")[0] for row in rows] == [
        "TF-IDF char 1-3-gram + LR", "recipe word2vec_bilstm_attn", "recipe max_pooling", "recipe student",
        "recipe word2vec_bilstm_attn, its BiLSTM alone", "recipe max_pooling, its BiLSTM alone",
        "recipe student + TF-IDF"]  # fmt: skip
    assert rows[1][5] == "—" and all(row[5].count("[") == 1 for row in rows[2:4])
    assert all(row[4].count("[") == 1 for row in rows[1:])
    results = json.loads((tmp_path / "runs" / "benchmark.json").read_text())["datasets"][folder.name]
    run_dirs = {run["config"]: Path(run["run_dir"]) for run in results["runs"] if run["method"] == "recipe"}
    assert json.loads((run_dirs["max_pooling"] / "config.json").read_text())["pooling"] == "attention+max"
    assert str(trained_run) in (run_dirs["student"] / "README.md").read_text()

    other = tmp_path / "other_split.yaml"
    other.write_text((configs / "word2vec_bilstm_attn.yaml").read_text().replace("test_size: 0.1", "test_size: 0.2"))
    script = load_script()
    with pytest.raises(ArgumentError, match=r"--config .*other_split.yaml: reads other data than .* \(test_size\)"):
        script.main(["--datasets", "default", "--config", str(configs / "word2vec_bilstm_attn.yaml"), str(other)])


def test_kept_runs_are_keyed_by_the_data_files_bytes_not_their_times(tmp_path):
    script = load_script()
    files = {name: tmp_path / f"{name}.csv" for name in ("train", "dev", "test")}
    for name, path in files.items():
        path.write_text(f"text,label\n好评 {name},pos\n", encoding="utf-8")
    data = types.SimpleNamespace(train_file=str(files["train"]), validation_file=str(files["dev"]), test_file=None)
    state = script.files_state(data)
    assert list(state) == [str(files["train"]), str(files["dev"])]
    os.utime(files["train"], ns=(1, 1))  # copied or restored: same bytes, another time
    assert script.files_state(data) == state
    files["train"].write_text("text,label\n差评 train,neg\n", encoding="utf-8")  # same size, other bytes
    changed = script.files_state(data)
    assert (
        changed[str(files["train"])] != state[str(files["train"])]
        and changed[str(files["dev"])] == state[str(files["dev"])]
    )


def write_topics_and_polarity(path: Path, n_per_label: int, seed: int) -> None:
    """JSON lines of templated reviews, each with two labels: its subject's group (of 3) and its polarity."""
    groups = {subject: f"group{index % 3}" for index, subject in enumerate(SUBJECTS)}
    with open(path, "w", encoding="utf-8") as file:
        for text, polarity in make_reviews(n_per_label, seed):
            group = next(name for subject, name in groups.items() if text.startswith(subject))
            file.write(json.dumps({"text": text, "label": sorted([group, polarity])}, ensure_ascii=False) + "\n")


def test_multilabel_data_gets_f1_rows_against_one_vs_rest_tfidf_and_a_variant_row(tiny_vectors, tmp_path):
    """JSON lines of label lists: the one-vs-rest TF-IDF baseline (fastText, single-label only, left out),
    the multi-label config and a --variant row, with micro/macro-F1 and their paired intervals."""
    data = tmp_path / "topics"
    data.mkdir()
    for name, n, seed in (("train", 60, 0), ("dev", 15, 1), ("test", 20, 2)):
        write_topics_and_polarity(data / f"{name}.jsonl", n, seed)
    config = ROOT / "recipes" / "configs" / "word2vec_bilstm_attn_multilabel.yaml"
    flags = ["--datasets", data, "--seeds", 1, "--runs_dir", tmp_path / "runs", "--config", config,
             "--variant", "small=--lstm_hidden_size 8", "--recipe_args", tiny_recipe_flags(tiny_vectors)]  # fmt: skip
    printed = run_benchmark(*flags, cwd=tmp_path)
    header = next(line for line in printed.splitlines() if line.startswith("| method"))
    assert header.startswith("| method | runs | test micro-F1 | test macro-F1 | exact match | micro-F1 − TF-IDF")
    assert "micro-F1 − recipe word2vec_bilstm_attn_multilabel |" in header
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in printed.splitlines()[1:]
            if line.startswith("| ") and not line.startswith("| method")]  # fmt: skip
    assert [row[0].split(" (")[0] for row in rows] == [
        "TF-IDF char 1-3-gram + LR", "recipe word2vec_bilstm_attn_multilabel",
        "recipe word2vec_bilstm_attn_multilabel-small", "recipe word2vec_bilstm_attn_multilabel, its BiLSTM alone",
        "recipe word2vec_bilstm_attn_multilabel-small, its BiLSTM alone"]  # fmt: skip
    assert "one-vs-rest, threshold" in rows[0][0] and all(row[5].count("[") == 1 for row in rows[1:])
    results = json.loads((tmp_path / "runs" / "benchmark.json").read_text())["datasets"]["topics"]
    truth = np.asarray(results["test_labels"]) > 0.5
    assert truth.shape == (40, 5) and set(truth.sum(1)) == {2}
    for run in results["runs"]:  # every row's numbers are its predictions' (0/1 rows of the 5 labels)
        predicted = np.asarray(run["predicted"]) > 0.5
        tp, fp, fn = (predicted & truth).sum(), (predicted & ~truth).sum(), (~predicted & truth).sum()
        assert run["test_micro_f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert results["runs"][0]["test_micro_f1"] >= 0.9  # TF-IDF on templated reviews
    recipe = next(run for run in results["runs"] if run["method"] == "recipe")
    metrics = json.loads((Path(recipe["run_dir"]) / "metrics.json").read_text())
    assert metrics["test_micro_f1"] == recipe["test_micro_f1"]
    small = next(run for run in results["runs"] if run.get("config", "").endswith("-small"))
    assert json.loads((Path(small["run_dir"]) / "config.json").read_text())["lstm_hidden_size"] == 8


def test_variants_and_suites_are_checked(tmp_path):
    script = load_script()
    with pytest.raises(ArgumentError, match=r"--variant =--loss focal: give NAME=FLAGS"):
        script.parse_args(["--variant", "=--loss focal"])
    with pytest.raises(ArgumentError, match=r"--variant x=--seed 1: --seed is set by the benchmark"):
        script.parse_args(["--variant", "x=--seed 1"])
    args = script.parse_args(["--suite", "imbalance", "--datasets", str(tmp_path)])  # a flag given wins
    assert args.datasets == [str(tmp_path)] and args.methods == ["recipe", "tfidf_lr", "tfidf_lr_balanced"]
    assert [name for _, name, _ in script.recipe_rows(args)] == [
        "word2vec_bilstm_attn",
        "word2vec_bilstm_attn-balanced",
        "word2vec_bilstm_attn-focal_balanced",
    ]
    assert script.recipe_rows(args)[1][2] == ["--class_weights", "balanced"]


def test_trainer_rows_fine_tune_the_recipes_checkpoint_with_its_epochs_and_rate(folder, tiny_bert, tmp_path):
    runs_dir = tmp_path / "runs"
    recipe_args = (f"--model_name_or_path {tiny_bert} --num_train_epochs 4 --learning_rate 0.002 "
                   "--per_device_train_batch_size 8 --max_seq_length 32")  # fmt: skip
    output = run_benchmark("--datasets", folder, "--seeds", 2, "--runs_dir", runs_dir, "--config", "bert_bilstm_attn",
                           "--methods", "tfidf_lr", "trainer", "--recipe_args", recipe_args, cwd=tmp_path)  # fmt: skip
    rows = {row[0]: row for row in table(output)}
    trainer = rows["transformers Trainer, AutoModelForSequenceClassification"]
    assert trainer[1] == "2"  # two seeds
    records = sorted(runs_dir.glob("tiny_reviews*/trainer-*-seed*.json"))
    assert [path.name.rsplit("-", 1)[1] for path in records] == ["seed42.json", "seed43.json"]
    settings = [json.loads(path.read_text(encoding="utf-8"))["settings"] for path in records]
    keys = ("model_name_or_path", "num_train_epochs", "learning_rate", "max_seq_length")
    chosen = {tuple(s[key] for key in keys) for s in settings}
    assert chosen == {(str(tiny_bert), 4, 0.002, 32)} and [s["seed"] for s in settings] == [42, 43]
    selection = json.loads(records[0].read_text(encoding="utf-8"))["result"]["selection"]
    assert len(selection["dev_macro_f1_by_epoch"]) == 4 and selection["train_samples_per_second"] > 0


def test_a_run_trained_under_autocast_may_differ_from_float32_rescoring_on_a_few_boundary_texts(tmp_path):
    from scripts.benchmark_scoring import agreement_needed

    for config, needed in (("bf16: true\n", 0.995), ("fp16: true\n", 0.995), ("bf16: false\n", 0.999), ("", 0.999)):
        (tmp_path / "config.yaml").write_text(config, encoding="utf-8")
        assert agreement_needed(tmp_path) == needed


def test_a_lora_runs_branch_is_read_from_its_base_model(tmp_path):
    """A LoRA run's OUTPUT_DIR holds adapter_config.json, its config.json is the base model's (`base/`)."""
    from scripts.benchmark_scoring import has_tfidf_branch

    for ngrams in (0, 12):
        run = tmp_path / f"run{ngrams}"
        (run / "base").mkdir(parents=True)
        (run / "base" / "config.json").write_text(json.dumps({"tfidf_num_ngrams": ngrams}), encoding="utf-8")
        adapter = {"base_model_name_or_path": str(run / "base"), "peft_type": "LORA"}
        (run / "adapter_config.json").write_text(json.dumps(adapter), encoding="utf-8")
        assert has_tfidf_branch(run) is (ngrams > 0)
