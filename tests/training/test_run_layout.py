"""The run directory laid out as transformers' Trainer lays it out: the model saved in OUTPUT_DIR itself (what
`pipeline()` and `from_pretrained` are given), checkpoint-K beside it (what `get_last_checkpoint` finds); the
model's save into a directory it shares, safe against a kill; a run directory of the earlier layout (best/,
checkpoints/step-K) still loads for every command, and its checkpoints are refused in one line."""

import fcntl
import json
import os
import shutil
import signal
import stat
import subprocess
import sys

import pytest
import torch
from conftest import as_earlier_layout, in_process_scores, run_pipeline, tiny_recipe_args, write_csv
from test_training import TEXTS, VOCAB, assert_same_model, tiny_model
from transformers.trainer_utils import get_last_checkpoint

from finetune import JiebaTokenizer
from finetune.cli import main as cli
from finetune.errors import RunDirectoryError, StorageError, message_of
from finetune.files import MODEL_RECORD, save_pretrained_into, saved_model_files
from finetune.model_files import resolve_model_directory
from finetune.recipes.train_bilstm_attention import main as train
from finetune.training.checkpointing import list_checkpoints, resolve_checkpoint

RUN_FILES = ("config.yaml", "metrics.json", "finished.json", "test_predictions.csv", "training_curves.png")


@pytest.fixture
def tokenizer():
    return JiebaTokenizer(vocab=VOCAB, model_max_length=32)


def newer_model():
    model = tiny_model()
    with torch.no_grad():
        model.classifier.bias.fill_(3.0)
    return model


def a_run_directory(path):
    """A directory holding a run's own files, as the recipe writes them before its first model."""
    path.mkdir()
    (path / "config.yaml").write_text("learning_rate: 0.01\n", encoding="utf-8")
    (path / "checkpoint-4").mkdir()
    (path / "checkpoint-4" / "trainer_state.json").write_text("{}", encoding="utf-8")
    return path


def run_files(path) -> dict:
    return {name: (path / name).read_bytes() for name in ("config.yaml", "checkpoint-4/trainer_state.json")}


# ##### the recipe's run directory #####


def test_the_run_directory_is_the_model_directory(trained_run):
    saved = saved_model_files(trained_run)
    assert {"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"} <= set(saved)
    assert saved[-1] == "model.safetensors"  # the weights moved into place last
    assert all((trained_run / name).is_file() for name in [*saved, *RUN_FILES, "README.md"])
    assert not (trained_run / "best").exists() and not (trained_run / "checkpoints").exists()
    texts = ["这部电影很好。", "酒店太差劲了！", ""]
    scores = run_pipeline(trained_run, texts)  # pipeline(model=OUTPUT_DIR) in a new process, `import finetune`
    for got, want in zip(scores, in_process_scores(trained_run, texts), strict=True):  # from_pretrained(OUTPUT_DIR)
        assert {row["label"]: pytest.approx(row["score"], abs=1e-5) for row in got} == want


def test_get_last_checkpoint_finds_the_newest_checkpoint(trained_run, tmp_path):
    newest = list_checkpoints(trained_run)[-1]
    assert get_last_checkpoint(str(trained_run)) == str(newest)
    run = shutil.copytree(trained_run, tmp_path / "run")
    step = int(newest.name.split("-")[1])
    # a checkpoint being staged, the model's staging directory, an earlier layout's: none is a checkpoint-K
    for name in (f".checkpoint-{step + 10}.tmp", ".model-a1b2c3d4", f"checkpoints/step-{step + 20}"):
        (run / name).mkdir(parents=True)
    assert get_last_checkpoint(str(run)) == str(run / newest.name)
    assert resolve_checkpoint("latest", run).name == newest.name


# ##### the model's save among the run's files #####


def test_save_pretrained_into_keeps_the_runs_files_and_replaces_the_previous_model(tmp_path, tokenizer, monkeypatch):
    run = a_run_directory(tmp_path / "run")
    before = run_files(run)
    first = tiny_model()
    original = type(first).save_pretrained

    def with_an_extra_file(self, directory, *args, **kwargs):  # as a model with a TF-IDF branch saves one more
        original(self, directory, *args, **kwargs)
        (directory / "extra.json").write_text("{}", encoding="utf-8")

    monkeypatch.setattr(type(first), "save_pretrained", with_an_extra_file)
    save_pretrained_into(first, tokenizer, run)
    monkeypatch.undo()
    assert_same_model(run, first, tokenizer)
    assert "extra.json" in saved_model_files(run) and run_files(run) == before

    newer = newer_model()
    save_pretrained_into(newer, tokenizer, run)
    assert_same_model(run, newer, tokenizer)
    assert not (run / "extra.json").exists()  # the previous model's file the new one lacks
    assert run_files(run) == before
    hidden = sorted(p.name for p in run.iterdir() if p.name.startswith("."))
    assert hidden == [MODEL_RECORD]  # no staging directory left
    assert json.loads((run / MODEL_RECORD).read_text(encoding="utf-8")) == {"files": saved_model_files(run)}


def test_a_save_that_fails_leaves_the_previous_model(tmp_path, tokenizer, monkeypatch):
    run = a_run_directory(tmp_path / "run")
    previous = tiny_model()
    save_pretrained_into(previous, tokenizer, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    broken = newer_model()

    def save_half_then_fail(directory, *args, **kwargs):
        (directory / "model.safetensors").write_bytes(b"half a model")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(broken, "save_pretrained", save_half_then_fail)
    with pytest.raises(StorageError) as error:
        save_pretrained_into(broken, tokenizer, run)
    assert message_of(error.value).startswith(f"{run}: saving the model: no space left on the disk")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert_same_model(run, previous, tokenizer)
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == [MODEL_RECORD]


def test_the_saved_files_are_readable_by_others(tmp_path, tokenizer):
    run = a_run_directory(tmp_path / "run")
    previous = os.umask(0o022)
    try:
        save_pretrained_into(tiny_model(), tokenizer, run)
    finally:
        os.umask(previous)
    for name in [*saved_model_files(run), MODEL_RECORD]:
        assert stat.S_IMODE(os.stat(run / name).st_mode) == 0o644, name


# A save into `target` SIGKILLed at its N-th rename into `target`: the 1st is the record's (the commit point), each
# later one moves a file of the model into place.
KILLED_SAVE = """
import os, signal, sys
from pathlib import Path
from transformers import AutoModelForSequenceClassification, AutoTokenizer
import finetune
from finetune import files

source, target, at = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
model, tokenizer = AutoModelForSequenceClassification.from_pretrained(source), AutoTokenizer.from_pretrained(source)
replace, renames = os.replace, []

def replace_or_die(old, new):
    if Path(new).parent == target:
        renames.append(new)
        if len(renames) == at:
            os.kill(os.getpid(), signal.SIGKILL)
    replace(old, new)

files.os.replace = replace_or_die
files.save_pretrained_into(model, tokenizer, target)
"""


def killed_save(model, tokenizer, run, tmp_path, at: int) -> None:
    source = tmp_path / "source"
    model.save_pretrained(source)
    tokenizer.save_pretrained(source)
    result = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(source), str(run), str(at)], capture_output=True)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()[-3000:]


def test_a_save_killed_before_its_commit_point_leaves_the_previous_model(tmp_path, tokenizer):
    run = a_run_directory(tmp_path / "run")
    previous = tiny_model()
    save_pretrained_into(previous, tokenizer, run)
    killed_save(newer_model(), tokenizer, run, tmp_path, at=1)
    assert_same_model(run, previous, tokenizer)
    assert list(run.glob(".model-*"))  # the complete staging directory, never moved in
    newer = newer_model()
    save_pretrained_into(newer, tokenizer, run)  # the next save removes what the killed one left
    assert_same_model(run, newer, tokenizer)
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == [MODEL_RECORD]


def test_a_save_killed_while_moving_its_files_is_finished_by_the_next_reader(tmp_path, tokenizer, caplog):
    run = a_run_directory(tmp_path / "run")
    before = run_files(run)
    save_pretrained_into(tiny_model(), tokenizer, run)
    newer = newer_model()
    killed_save(newer, tokenizer, run, tmp_path, at=3)  # committed, one file moved: the rest are the old model's
    record = json.loads((run / MODEL_RECORD).read_text(encoding="utf-8"))
    assert record["staging"] and (run / record["staging"] / "model.safetensors").is_file()

    with open(run / ".lock", "w", encoding="utf-8") as lock:  # a live run holds the directory: left to it
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert resolve_model_directory(run) == run
        assert json.loads((run / MODEL_RECORD).read_text(encoding="utf-8")) == record
    assert resolve_model_directory(run) == run  # no live run: the reader finishes the save
    assert_same_model(run, newer, tokenizer)
    assert json.loads((run / MODEL_RECORD).read_text(encoding="utf-8")) == {"files": record["files"]}
    assert not list(run.glob(".model-*")) and run_files(run) == before


# ##### a run directory of the earlier layout #####


@pytest.fixture(scope="module")
def earlier_run(trained_run, tmp_path_factory):
    """The trained run as an earlier version laid it out: the model in best/, checkpoints/step-K."""
    return as_earlier_layout(shutil.copytree(trained_run, tmp_path_factory.mktemp("earlier") / "run"))


def test_predict_and_explain_load_the_model_in_best(earlier_run, trained_run, tmp_path, capsys, caplog):
    with caplog.at_level("INFO", logger="finetune"):
        cli(["predict", str(earlier_run), "--text", "这部电影很好。", "--text", "酒店太差劲了！"])
    assert f"{earlier_run}: a run directory of the earlier layout; loading the model in {earlier_run / 'best'}" in (
        caplog.text
    )
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    cli(["predict", str(trained_run), "--text", "这部电影很好。", "--text", "酒店太差劲了！"])
    assert printed == [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    input_file = write_csv(tmp_path / "in.csv", [(text, "") for text in TEXTS])
    cli(["predict", str(earlier_run), str(input_file), "--output", str(tmp_path / "out.csv")])
    assert len((tmp_path / "out.csv").read_text(encoding="utf-8-sig").splitlines()) == len(TEXTS) + 1
    capsys.readouterr()
    cli(["explain", str(earlier_run), "--text", "这部电影很好。"])
    assert capsys.readouterr().out.split()[0] in {"positive", "negative"}


def test_evaluate_and_do_train_false_score_the_model_in_best(earlier_run, trained_run, tmp_path):
    test_file = write_csv(tmp_path / "labelled.csv", [("这部电影很好。", "positive"), ("酒店太差劲了！", "negative")])
    cli(["evaluate", str(earlier_run), str(test_file)])  # into the run's evaluation/, as before
    evaluated = json.loads((earlier_run / "evaluation" / "labelled" / "metrics.json").read_text(encoding="utf-8"))
    cli(["evaluate", str(trained_run), str(test_file), "--output_dir", str(tmp_path / "now")])
    now = json.loads((tmp_path / "now" / "metrics.json").read_text(encoding="utf-8"))
    assert evaluated["model"] == str(earlier_run / "best") and evaluated["test_accuracy"] == now["test_accuracy"]

    saved = json.loads((earlier_run / "metrics.json").read_text(encoding="utf-8"))
    results = train(
        ["--config", str(earlier_run / "config.yaml"), "--do_train", "false", "--output_dir", str(earlier_run)]
    )
    assert results["test_accuracy"] == saved["test_accuracy"] and results["model"] == str(earlier_run / "best")


def test_its_checkpoints_are_refused_in_one_line(earlier_run, reviews_csv, tiny_vectors, tmp_path):
    earlier = "a checkpoint of an earlier finetune's layout \\(checkpoints/step-K, the model in best/\\)"
    with pytest.raises(RunDirectoryError, match=f"^--resume_from_checkpoint latest: {earlier}"):
        resolve_checkpoint("latest", earlier_run)
    step = next((earlier_run / "checkpoints").iterdir())
    with pytest.raises(RunDirectoryError, match=f": {earlier}, which this version does not resume; "):
        resolve_checkpoint(str(step), earlier_run)
    run = shutil.copytree(earlier_run, tmp_path / "run")
    for name in ("finished.json", "metrics.json"):  # as a run stopped before its outputs leaves it
        (run / name).unlink()
    with pytest.raises(RunDirectoryError, match=earlier):
        train(tiny_recipe_args(reviews_csv, tiny_vectors, run, "--resume_from_checkpoint", "latest"))
    assert not list(run.glob("checkpoint-*")) and not (run / "config.json").exists()  # nothing written


def test_export_writes_onnx_beside_the_model(trained_run, earlier_run, tmp_path, capsys):
    run = shutil.copytree(trained_run, tmp_path / "run")
    for directory, exported in ((run, run / "onnx"), (earlier_run, earlier_run / "best" / "onnx")):
        cli(["export", str(directory)])
        assert (exported / "model.onnx").is_file() and (exported / "vocab.txt").is_file()
        capsys.readouterr()
        cli(["predict", str(directory), "--text", "这部电影很好。", "--backend", "onnx"])
        assert json.loads(capsys.readouterr().out)["label"] in {"positive", "negative"}
    assert not list(run.glob(".onnx*")) and "onnx" not in saved_model_files(run)
