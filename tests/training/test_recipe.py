"""The training recipe, run for real: one process in-process, two processes under accelerate launch."""

import csv
import json
import os
import re
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, run_launch, tiny_recipe_args
from safetensors.torch import load_file

from finetune.config.arguments import RECIPE_ARGUMENTS
from finetune.config.distill_arguments import DISTILL_ARGUMENTS
from finetune.config.parsing import parse_recipe_args, parse_run_args
from finetune.errors import ArgumentError
from finetune.pretrain.language_model import PretrainArguments
from finetune.recipes.pretrain_bilm import BiLMArguments
from finetune.recipes.pretrain_mlm import MLMArguments


def recipe_groups(config: Path) -> tuple:
    """The argument groups of the recipe a config belongs to (`*_pretrain.yaml`: a pretraining recipe)."""
    if config.stem == "bilm_pretrain":
        return (BiLMArguments, PretrainArguments)
    if config.stem.endswith("mlm_pretrain"):
        return (MLMArguments, PretrainArguments)
    if config.stem.startswith("distill"):
        return DISTILL_ARGUMENTS
    return RECIPE_ARGUMENTS


def test_every_recipe_config_parses():
    configs = sorted((ROOT / "recipes" / "configs").glob("*.yaml"))
    assert len(configs) >= 5
    for config in configs:
        groups = recipe_groups(config)
        parsed = parse_recipe_args(["--config", str(config)], groups=groups)
        assert [type(group) for group in parsed[:-1]] == list(groups)
        assert parsed[-1] == str(config)


def test_command_line_overrides_config(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("num_train_epochs: 3\nlearning_rate: 0.01\n", encoding="utf-8")
    args, _ = parse_run_args(["--config", str(config), "--learning_rate", "0.5"])
    assert (args.training.num_train_epochs, args.training.learning_rate) == (3, 0.5)


def test_unknown_config_key_is_named(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("num_train_epoch: 3\n", encoding="utf-8")
    with pytest.raises(ArgumentError, match=r"c.yaml: unknown key num_train_epoch \(did you mean num_train_epochs\?\)"):
        parse_recipe_args(["--config", str(config)])


def test_a_one_epoch_run_records_and_draws_its_training_loss(reviews_csv, tiny_vectors, tmp_path, monkeypatch):
    from finetune.evaluation import reports
    from finetune.recipes.train_bilstm_attention import main

    drawn, save = {}, reports._save

    def keep_curves(fig, path):
        if Path(path).name == "training_curves.png":
            for ax in fig.axes:
                labels = [text.get_text() for text in ax.get_legend().get_texts()]
                drawn[ax.get_xlabel() + ax.get_ylabel()] = labels, {line.get_label(): len(line.get_xdata())
                                                                    for line in ax.get_lines()}  # fmt: skip
        save(fig, path)

    monkeypatch.setattr(reports, "_save", keep_curves)
    output_dir = tmp_path / "run"
    # 15 optimizer steps, fewer than logging_steps: before, no training loss was recorded at all
    main(tiny_recipe_args(reviews_csv, tiny_vectors, output_dir, "--num_train_epochs", "1", "--logging_steps", "50"))

    history = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))["history"]
    assert [row["step"] for row in history["train"]] == [1, 15] and [row["step"] for row in history["eval"]] == [15]
    assert all(row["loss"] > 0 for row in history["train"])
    (left_labels, left_lines), (right_labels, right_lines) = drawn["optimizer steploss"], drawn["optimizer step"]
    assert left_labels == ["train loss", "validation cross-entropy"]
    assert left_lines == {"train loss": 2, "validation cross-entropy": 1}
    assert right_labels == list(right_lines) and all(points == 1 for points in right_lines.values())


def test_recipe_trains_saves_and_reports(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["data"]["stats"]["train"]["kept"] == 300
    assert (metrics["test_num_examples"], metrics["validation_num_examples"]) == (30, 30)
    # templated reviews: the sentiment word decides, and the model must have found it
    assert metrics["test_accuracy"] >= 0.9
    assert metrics["validation_macro_f1"] >= 0.9
    assert set(metrics["test_per_class"]) == {"negative", "positive"}
    assert sum(row["support"] for row in metrics["test_per_class"].values()) == metrics["test_num_examples"]
    losses = [row["loss"] for row in metrics["history"]["train"]]
    assert sum(losses[-3:]) / 3 < 0.5 * losses[0]  # the last few logged losses, not one noisy batch
    assert metrics["vectors"]["dim"] == 8 and 0 < metrics["vectors"]["token_coverage"] < 1
    assert metrics["train_samples_per_second"] > 0
    for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"):
        assert (trained_run / name).exists(), name
    for name in ("training_curves.png", "confusion_matrix.png", "attention.html", "config.yaml"):
        assert (trained_run / name).stat().st_size > 0, name
    assert (trained_run / "attention.html").read_text(encoding="utf-8").count("<div class='row'>") == 20
    saved = yaml.safe_load((trained_run / "config.yaml").read_text(encoding="utf-8"))
    assert saved["lstm_hidden_size"] == 16 and saved["word_vectors"].endswith("tiny.vec")


def test_recipe_model_carries_its_tfidf_branch_into_pipeline(trained_run):
    from transformers import pipeline

    import finetune  # noqa: F401

    metrics = json.loads((trained_run / "metrics.json").read_text(encoding="utf-8"))
    branch = metrics["tfidf_branch"]
    assert branch["ngrams"] > 100 and branch["C"] in (float(c) for c in branch["validation_macro_f1_by_C"])
    config = json.loads((trained_run / "config.json").read_text(encoding="utf-8"))
    assert (config["tfidf_num_ngrams"], config["tfidf_mix_weight"]) == (branch["ngrams"], branch["mix_weight"])
    assert (trained_run / "tfidf_ngrams.json").stat().st_size > 0
    card = (trained_run / "README.md").read_text(encoding="utf-8")
    share = branch["mix_weight"]
    assert f"- TF-IDF branch: character 1-3-gram TF-IDF + logistic regression (C {branch['C']:g}, " in card
    assert f"the BiLSTM's + {share:g} x the branch's" in card
    # the saved model (branch included) gives the test predictions the recipe wrote
    rows = list(csv.DictReader((trained_run / "test_predictions.csv").open(encoding="utf-8-sig")))
    classifier = pipeline("text-classification", model=str(trained_run))
    predicted = classifier([row["text"] for row in rows], batch_size=8)
    assert [p["label"] for p in predicted] == [row["predicted_label"] for row in rows]
    assert max(abs(p["score"] - float(row["score"])) for p, row in zip(predicted, rows, strict=True)) < 1e-5


def test_two_processes_count_every_test_example_once(reviews_csv, tiny_vectors, tmp_path):
    """Under DDP, with the options that change what a process computes (class-weighted focal loss) and how
    many examples a text makes (training on every window of a long text, scored per text): each test and
    validation text is counted once, whatever the uneven share and the windows per process."""
    output_dir = tmp_path / "ddp"
    windows = ["--max_seq_length", "8", "--long_text", "windows", "--doc_stride", "2", "--train_windows", "all"]
    args = tiny_recipe_args(
        reviews_csv, tiny_vectors, output_dir, "--class_weights", "balanced", "--loss", "focal", *windows
    )
    result = run_launch(args, 2, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MULTI_CPU, 2 process(es), mixed precision no" in result.stderr
    assert "training loss: focal (gamma 2), class weights" in result.stderr
    metrics = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
    # 30 test texts: an uneven share per process must not be padded into the metrics
    assert metrics["test_num_examples"] == 30
    assert sum(row["support"] for row in metrics["test_per_class"].values()) == 30
    assert sum(map(sum, metrics["test_confusion_matrix"])) == 30
    assert metrics["validation_num_examples"] == 30
    assert metrics["test_accuracy"] >= 0.9
    config = json.loads((output_dir / "config.json").read_text(encoding="utf-8"))
    assert (config["long_text"], config["max_length"], config["doc_stride"]) == ("windows", 8, 2)


# The recipe, noting every file a process creates, renames or deletes (in WRITES_DIR/rank-R.txt).
LOGGING_RECIPE = """
import atexit, builtins, os, shutil, sys
sys.path.insert(0, os.environ["FINETUNE_ROOT"])
import safetensors.torch
import torch

written = []
rank = os.environ.get("RANK", "0")
log = os.path.join(os.environ["WRITES_DIR"], f"rank-{rank}.txt")
atexit.register(lambda: open(log, "x").write("\\n".join(written)))

def noting(function, *positions):
    def wrapper(*args, **kwargs):
        written.extend(str(args[i]) for i in positions if i < len(args))
        return function(*args, **kwargs)
    return wrapper

real_open = builtins.open

def noting_open(file, mode="r", *args, **kwargs):
    if set(mode) & set("wax+"):
        written.append(str(file))
    return real_open(file, mode, *args, **kwargs)

builtins.open = noting_open
os.replace, os.rename = noting(os.replace, 1), noting(os.rename, 1)
os.makedirs, os.mkdir = noting(os.makedirs, 0), noting(os.mkdir, 0)
shutil.rmtree = noting(shutil.rmtree, 0)
safetensors.torch.save_file = noting(safetensors.torch.save_file, 1)
torch.save = noting(torch.save, 1)
import finetune.training.tfidf_branch
real_fit = finetune.training.tfidf_branch.fit_branch

def noting_fit(*args, **kwargs):
    written.append("fit_branch()")
    return real_fit(*args, **kwargs)

finetune.training.tfidf_branch.fit_branch = noting_fit
from finetune.recipes.train_bilstm_attention import main
main()
"""

NO_DROPOUT = ["--embedding_dropout", "0", "--classifier_dropout", "0", "--word_dropout", "0"]


def test_two_processes_match_one_process_with_the_same_global_batch(reviews_csv, tiny_vectors, tmp_path):
    """2 processes x batch 8 == 1 process x batch 8 x 2 accumulation steps: the same batches make each step.

    With dropout off, the only difference is the order of float additions (DDP's all-reduce vs
    accumulation), so losses and metrics agree to 1e-4. Adversarial training on one step in two
    covers both kinds of step in one run: plain steps, and steps of two backward passes with each
    text moved along its own gradient (the same steps in both set-ups, counted in optimizer steps,
    not batches). Only the main process writes outputs.
    """
    adversarial_epsilon, adversarial_interval = "1", "2"
    script = tmp_path / "recipe_noting_writes.py"
    script.write_text(LOGGING_RECIPE, encoding="utf-8")
    runs = {}
    for processes, accumulation in ((1, 2), (2, 1)):
        output_dir, writes = tmp_path / f"p{processes}", tmp_path / f"writes{processes}"
        writes.mkdir()
        args = tiny_recipe_args(reviews_csv, tiny_vectors, output_dir, "--num_train_epochs", "3", *NO_DROPOUT)
        args += ["--per_device_train_batch_size", "8", "--gradient_accumulation_steps", str(accumulation)]
        args += ["--adversarial_epsilon", adversarial_epsilon, "--adversarial_interval", adversarial_interval]
        os.environ.update(FINETUNE_ROOT=str(ROOT), WRITES_DIR=str(writes))
        result = run_launch(args, processes, tmp_path, script=script)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[processes] = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8")), writes

    (one, _), (two, writes) = runs[1], runs[2]
    assert one["train_steps"] == two["train_steps"] == 45
    one_losses = [row["loss"] for row in one["history"]["train"]]
    two_losses = [row["loss"] for row in two["history"]["train"]]
    assert two_losses == pytest.approx(one_losses, abs=1e-4)
    for key in ("validation_loss", "test_loss", "test_accuracy", "test_macro_f1", "validation_macro_f1"):
        assert two[key] == pytest.approx(one[key], abs=1e-4), key
    assert two["test_num_examples"] == 30
    card = (tmp_path / "p2" / "README.md").read_text(encoding="utf-8")
    assert "Adversarial training on the input embeddings" in card and "one optimizer step in 2" in card

    # In the run directory rank 1 touches only the checkpoint being staged (accelerate saves each
    # process's random-number state there); every output is rank 0's.
    rank1 = [line for line in (writes / "rank-1.txt").read_text(encoding="utf-8").splitlines() if "/p2/" in line]
    staged = re.compile(r".*/p2/\.checkpoint-\d+\.tmp(/random_states_1\.pkl)?")
    assert rank1 and all(staged.fullmatch(line) for line in rank1), rank1
    assert (tmp_path / "p2" / "checkpoint-45" / "random_states_1.pkl").exists()
    rank0 = (writes / "rank-0.txt").read_text(encoding="utf-8")
    assert str(tmp_path / "p2" / ".lock") in rank0.splitlines()  # the run directory's lock: rank 0's alone
    for name in ("metrics.json", "model.safetensors", "optimizer.bin", "random_states_0.pkl", "confusion_matrix.png"):
        assert name in rank0, name
    # The TF-IDF branch is fitted once, by rank 0, and sent to rank 1, whose test share it scores (the test
    # metrics above match one process's)
    branches = [{key: run["tfidf_branch"][key] for key in ("ngrams", "C", "mix_weight")} for run in (one, two)]
    assert rank0.splitlines().count("fit_branch()") == 1 and branches[0] == branches[1]
    assert "fit_branch()" not in (writes / "rank-1.txt").read_text(encoding="utf-8")


def test_bf16_mixed_precision_trains_where_the_cpu_has_it_and_is_one_line_where_not(
    reviews_csv, tiny_vectors, tmp_path
):
    from finetune.devices import cpu_has_native_bf16

    output_dir = tmp_path / "bf16"
    result = run_launch(tiny_recipe_args(reviews_csv, tiny_vectors, output_dir), 1, tmp_path, mixed_precision="bf16")
    if not cpu_has_native_bf16():  # e.g. an AVX2-only CPU: oneDNN has no bf16 LSTM there
        # the recipe's one line (accelerate's launcher then reports the exit status with its own traceback)
        lines = [line for line in result.stderr.splitlines() if line.startswith("train_bilstm_attention.py: error:")]
        assert result.returncode == 1 and len(lines) == 1, result.stderr[-3000:]
        assert lines[0].endswith(
            "no native bfloat16 (AVX512-BF16 or AMX), so its LSTM kernels refuse it; train in float32 (drop --bf16)"
        )
        assert "could not create a primitive" not in result.stderr
        assert not output_dir.exists()
        return
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 process(es), mixed precision bf16" in result.stderr
    metrics = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["test_accuracy"] >= 0.9
    assert load_file(output_dir / "model.safetensors")["classifier.weight"].dtype == torch.float32


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU, accelerate does run FSDP")
@pytest.mark.parametrize("name", ["FSDP", "DEEPSPEED"])
def test_sharded_configs_on_cpus_are_a_clear_error(name, monkeypatch):
    from finetune.devices import create_accelerator

    monkeypatch.setenv(f"ACCELERATE_USE_{name}", "true")
    with pytest.raises(RuntimeError, match=f"{name} needs GPUs; on CPUs use recipes/accelerate_configs/ddp.yaml"):
        create_accelerator()


# The recipe, with one process (RANK 1) sent SIGTERM before its optimizer step 7: as a scheduler's signal that
# reaches the processes at different steps.
SIGNALLED_RECIPE = """
import os, signal, sys
sys.path.insert(0, os.environ["FINETUNE_ROOT"])
from torch.optim.optimizer import register_optimizer_step_pre_hook

calls = {"step": 0}

def before_step(optimizer, args, kwargs):
    calls["step"] += 1
    if calls["step"] == 7 and os.environ.get("RANK") == "1":
        os.kill(os.getpid(), signal.SIGTERM)

register_optimizer_step_pre_hook(before_step)
from finetune.errors import report_errors
from finetune.recipes.train_bilstm_attention import main
report_errors("train_bilstm_attention.py")(main)()
"""


def test_two_processes_stop_at_the_same_step_when_one_is_signalled(reviews_csv, tiny_vectors, tmp_path):
    """SIGTERM reaching one process: both save one checkpoint at the same step (each its random state) and stop,
    the main process saying how to resume; the run directory's lock is the main process's alone."""
    script = tmp_path / "signalled_recipe.py"
    script.write_text(SIGNALLED_RECIPE, encoding="utf-8")
    os.environ["FINETUNE_ROOT"] = str(ROOT)
    output_dir = tmp_path / "ddp"
    result = run_launch(tiny_recipe_args(reviews_csv, tiny_vectors, output_dir, "--save_steps", "100"), 2, tmp_path,
                        script=script)  # fmt: skip
    assert result.returncode != 0
    stopped = [line for line in result.stderr.splitlines() if "stopped by SIGTERM" in line]
    assert len(stopped) == 1 and stopped[0].startswith("train_bilstm_attention.py: stopped by SIGTERM at step 7"), (
        result.stderr[-3000:]
    )
    assert "--resume_from_checkpoint latest" in stopped[0]
    checkpoint = output_dir / "checkpoint-7"
    assert json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))["step"] == 7
    assert (checkpoint / "random_states_0.pkl").exists() and (checkpoint / "random_states_1.pkl").exists()
    assert [p.name for p in output_dir.glob("*checkpoint-*")] == ["checkpoint-7"]  # no staging directory left
    assert not (output_dir / ".lock").exists() and not (output_dir / "metrics.json").exists()
