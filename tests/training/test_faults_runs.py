"""Faults around a run directory, as schedulers, clusters and full disks make them: one run at a time
(a lock naming its owner, a dead owner's lock taken over), SIGTERM and Ctrl-C saving a checkpoint at the
next step and naming the resume command, "finished" meaning every output written, OS errors in one line,
changed data refused on resume, labels that differ by spaces named. Each prints one line, no traceback."""

import errno
import json
import logging
import os
import signal
import socket

import pytest
from conftest import tiny_recipe_args
from torch.optim.optimizer import register_optimizer_step_pre_hook

import finetune.training.phases
from finetune.cli import main as cli
from finetune.data.cleaning import clean_split
from finetune.recipes import train_bilstm_attention
from finetune.recipes.train_bilstm_attention import main
from finetune.training.run_directory import FINISHED_FILE, LOCK_FILE, data_fingerprint, file_fingerprint
from finetune.training.run_lock import RunLock

# 240 training texts in batches of 16: 15 steps an epoch, 45 in all; a checkpoint every 10 steps.
RUN = ["--num_train_epochs", "3", "--save_strategy", "steps", "--save_steps", "10", "--word_dropout", "0.1"]


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("finetune: ")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def train_cli(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli(["train", *argv])
    return exit_info.value.code, capsys.readouterr().err


@pytest.fixture(scope="module")
def uninterrupted(reviews_csv, tiny_vectors, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("uninterrupted")
    return main(tiny_recipe_args(reviews_csv, tiny_vectors, output_dir, *RUN))


def signal_at_step(number: int, step: int):
    """Sends `number` to this process before optimizer step `step` (as a scheduler or Ctrl-C would, mid-run)."""
    calls = {"step": 0}

    def before_step(optimizer, args, kwargs):
        calls["step"] += 1
        if calls["step"] == step:
            os.kill(os.getpid(), number)

    return register_optimizer_step_pre_hook(before_step)


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_saves_at_the_next_step_and_the_resumed_run_matches(
    number, uninterrupted, reviews_csv, tiny_vectors, tmp_path, capsys
):
    output_dir = tmp_path / "run"
    args = tiny_recipe_args(reviews_csv, tiny_vectors, output_dir, *RUN)
    hook = signal_at_step(number, 23)  # mid-epoch 2, between the checkpoints of steps 20 and 30
    try:
        code, err = train_cli(args, capsys)
    finally:
        hook.remove()
    assert code == 128 + number
    name = signal.Signals(number).name
    line = one_error_line(err)
    assert f"finetune: stopped by {name} at step 23 (epoch 2); checkpoint {output_dir}/checkpoint-23 saved" in line
    assert " saved; resume with: finetune train --config " in line and f" --output_dir {output_dir} " in line
    assert line.endswith(" --save_steps 10 --word_dropout 0.1 --resume_from_checkpoint latest")
    assert (output_dir / "checkpoint-23").is_dir() and not (output_dir / FINISHED_FILE).exists()
    assert not (output_dir / LOCK_FILE).exists()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handlers are given back

    results = main([*args, "--resume_from_checkpoint", "latest"])
    for key in ("test_accuracy", "test_macro_f1", "validation_macro_f1", "best_step", "test_loss", "train_steps"):
        assert results[key] == uninterrupted[key], key
    assert results["history"] == uninterrupted["history"]
    assert (output_dir / FINISHED_FILE).exists()


def test_a_directory_another_run_holds_is_refused_in_one_line(reviews_csv, tiny_vectors, tmp_path, capsys):
    output_dir = tmp_path / "run"
    args = tiny_recipe_args(reviews_csv, tiny_vectors, output_dir, "--max_steps", "2")
    lock = RunLock(output_dir)
    lock.acquire()  # another run, alive, writing into the directory
    try:
        code, err = train_cli(args, capsys)
    finally:
        lock.release()
    assert code == 1
    line = one_error_line(err)
    assert f"--output_dir {output_dir}: another run is writing into it (process {os.getpid()} on " in line
    assert "wait for it to end, or give another --output_dir" in line
    assert not output_dir.exists()  # made for the lock, removed with it: a refused run leaves nothing


def test_a_dead_owners_lock_is_taken_over_with_a_warning(reviews_csv, tiny_vectors, tmp_path, caplog):
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    dead = {"pid": 999999, "host": socket.gethostname(), "since": "2026-01-01T00:00:00", "command": ["finetune"]}
    (output_dir / LOCK_FILE).write_text(json.dumps(dead), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="finetune.training.run_directory"):
        main(tiny_recipe_args(reviews_csv, tiny_vectors, output_dir, "--max_steps", "2"))
    assert any("taking over the lock of process 999999" in record.message for record in caplog.records)
    assert not (output_dir / LOCK_FILE).exists() and (output_dir / FINISHED_FILE).exists()


def test_a_lock_from_another_host_is_refused(reviews_csv, tiny_vectors, tmp_path, capsys):
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    other = {"pid": 4242, "host": "gpu-node-7", "since": "2026-01-01T00:00:00", "command": ["finetune", "train"]}
    (output_dir / LOCK_FILE).write_text(json.dumps(other), encoding="utf-8")
    code, err = train_cli(tiny_recipe_args(reviews_csv, tiny_vectors, output_dir, "--max_steps", "2"), capsys)
    assert code == 1
    line = one_error_line(err)
    assert "locked by a run on another host (process 4242 on gpu-node-7" in line
    assert f"delete {output_dir / LOCK_FILE}" in line
    assert json.loads((output_dir / LOCK_FILE).read_text(encoding="utf-8")) == other  # left as it was


def test_a_run_stopped_while_writing_its_outputs_finishes_that_phase_on_resume(
    reviews_csv, tiny_vectors, tmp_path, capsys, monkeypatch
):
    output_dir = tmp_path / "run"
    args = tiny_recipe_args(reviews_csv, tiny_vectors, output_dir, "--max_steps", "6", "--save_strategy", "steps",
                            "--save_steps", "4")  # fmt: skip
    picture = output_dir / "training_curves.png"

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(picture))

    monkeypatch.setattr(finetune.training.phases, "draw_pictures", disk_full)
    code, err = train_cli(args, capsys)
    assert code == 1
    line = one_error_line(err)
    assert line.startswith(f"finetune: error: {picture}: no space left on the disk (")
    assert "free); free some, or write elsewhere; then resume with: finetune train " in line
    assert line.endswith(" --save_steps 4 --resume_from_checkpoint latest")
    assert (output_dir / "metrics.json").exists() and not (output_dir / FINISHED_FILE).exists()
    monkeypatch.undo()

    code, err = train_cli(args, capsys)  # not finished: neither refused as finished nor started over
    assert code == 1
    assert "holds a run stopped while writing its outputs; give --resume_from_checkpoint latest" in one_error_line(err)

    steps = []
    hook = register_optimizer_step_pre_hook(lambda *a: steps.append(1))
    try:
        results = main([*args, "--resume_from_checkpoint", "latest"])
    finally:
        hook.remove()
    assert steps == []  # the loop had ended: only the outputs were written
    assert results["train_steps"] == 6
    assert picture.exists() and (output_dir / FINISHED_FILE).exists() and (output_dir / "README.md").exists()
    code, err = train_cli(args, capsys)
    assert "holds a finished run (finished.json)" in one_error_line(err)


def test_ctrl_c_before_training_is_one_line_and_leaves_nothing(
    reviews_csv, tiny_vectors, tmp_path, capsys, monkeypatch
):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_bilstm_attention.loading, "load_data", interrupted)
    output_dir = tmp_path / "run"
    code, err = train_cli(tiny_recipe_args(reviews_csv, tiny_vectors, output_dir), capsys)
    assert code == 130
    assert one_error_line(err) == "finetune: interrupted (Ctrl-C)"
    assert not output_dir.exists()


def test_an_output_directory_that_cannot_be_written_is_one_line_before_any_work(
    reviews_csv, tiny_vectors, capsys, monkeypatch
):
    def must_not_run(*args, **kwargs):
        raise AssertionError("the data was read before the output directory was checked")

    monkeypatch.setattr(train_bilstm_attention.loading, "load_data", must_not_run)
    code, err = train_cli(tiny_recipe_args(reviews_csv, tiny_vectors, "/sys/finetune-run"), capsys)
    assert code == 1
    # /sys is read-only even for root (EPERM here; EROFS where it is mounted read-only)
    line = one_error_line(err)
    assert line.startswith("finetune: error: /sys/finetune-run: cannot write the run directory: "), line
    assert "permission denied" in line or "read-only" in line


def test_changed_data_is_refused_on_resume_naming_the_file(reviews_csv, tiny_vectors, tmp_path, capsys):
    train_file = tmp_path / "reviews.csv"
    train_file.write_bytes(reviews_csv.read_bytes())
    output_dir = tmp_path / "run"
    args = tiny_recipe_args(train_file, tiny_vectors, output_dir, *RUN)
    hook = signal_at_step(signal.SIGTERM, 12)
    try:
        code, _ = train_cli(args, capsys)
    finally:
        hook.remove()
    assert code == 143
    lines = train_file.read_text(encoding="utf-8").splitlines()
    flipped = [lines[0]] + [line.replace(",positive", ",NEW").replace(",negative", ",positive") for line in lines[1:]]
    train_file.write_text("\n".join(flipped).replace(",NEW", ",negative") + "\n", encoding="utf-8")
    code, err = train_cli([*args, "--resume_from_checkpoint", "latest"], capsys)
    assert code == 1
    line = one_error_line(err)
    assert f"--train_file {train_file}: the file changed since checkpoint-12 was saved" in line, line
    assert (output_dir / "checkpoint-12").is_dir() and not (output_dir / "metrics.json").exists()


def test_the_fast_hash_sees_a_change_anywhere_in_a_big_file(tmp_path, monkeypatch):
    monkeypatch.setattr("finetune.training.run_directory.WHOLE_HASH_BYTES", 1 << 20)
    monkeypatch.setattr("finetune.training.run_directory.SAMPLE_BYTES", 1 << 12)
    big = tmp_path / "big.csv"
    data = bytearray(os.urandom(8 << 20))
    big.write_bytes(data)
    before = file_fingerprint(big)
    assert before["size"] == 8 << 20
    for place in (0, len(data) // 2 - (len(data) // 2) % 4096, len(data) - 1):  # first, a sampled middle, last byte
        changed = bytearray(data)
        changed[place] ^= 1
        big.write_bytes(changed)
        assert file_fingerprint(big)["hash"] != before["hash"], place
    big.write_bytes(data + b"x")
    assert file_fingerprint(big)["size"] == (8 << 20) + 1


def test_data_fingerprint_names_each_file_flag(reviews_csv, tmp_path):
    class Data:
        train_file, validation_file, test_file, dataset_name = str(reviews_csv), None, str(reviews_csv), None

    found = data_fingerprint(Data())
    assert set(found) == {"train_file", "test_file"}
    assert found["train_file"] == {"path": str(reviews_csv), "size": reviews_csv.stat().st_size,
                                   "hash": file_fingerprint(reviews_csv)["hash"]}  # fmt: skip


def test_labels_that_differ_only_by_spaces_are_merged_with_a_warning(caplog):
    from datasets import Dataset

    rows = Dataset.from_dict({"text": ["很好", "不错", "很差", "太差"], "label": ["pos", "pos ", "neg", "neg"]})
    with caplog.at_level(logging.WARNING, logger="finetune.data.cleaning"):
        cleaned, _ = clean_split(rows, name="reviews.csv")
    assert cleaned["label"] == ["pos", "pos", "neg", "neg"]
    assert "reviews.csv: labels that differ only by spaces around them are taken as one: 'pos' + 'pos ' -> 'pos'" in (
        caplog.text
    )


def test_a_write_that_fails_without_a_file_name_names_the_directory(tmp_path):
    from finetune.errors import StorageError, message_of
    from finetune.files import save_pretrained_atomic

    class FullDisk:
        def save_pretrained(self, directory):
            raise OSError(errno.ENOSPC, "No space left on device")  # as Python's open() raises it at close

    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "model.safetensors").write_bytes(b"the previous best")
    with pytest.raises(StorageError) as error:
        save_pretrained_atomic(FullDisk(), FullDisk(), tmp_path / "best")
    assert message_of(error.value).startswith(f"{tmp_path / 'best'}: saving the model: no space left on the disk (")
    assert [p.name for p in tmp_path.iterdir()] == ["best"]  # no staging directory left
    assert (tmp_path / "best" / "model.safetensors").read_bytes() == b"the previous best"


# The recipe in a process group of its own, which it sends SIGTERM before optimizer step 6: as `accelerate
# launch`, Kubernetes or a terminal's Ctrl-C signal the trainer and its DataLoader workers together.
GROUP_SIGNALLED = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from torch.optim.optimizer import register_optimizer_step_pre_hook

calls = {"step": 0}

def before_step(optimizer, args, kwargs):
    calls["step"] += 1
    if calls["step"] == 6:
        os.killpg(os.getpgid(0), signal.SIGTERM)

register_optimizer_step_pre_hook(before_step)
from finetune.cli import main
main(["train", *sys.argv[2:]])
"""


def test_a_signal_to_the_whole_run_with_dataloader_workers_still_saves(reviews_csv, tiny_vectors, tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    output_dir = tmp_path / "run"
    args = tiny_recipe_args(reviews_csv, tiny_vectors, output_dir, *RUN, "--dataloader_num_workers", "2")
    result = subprocess.run([sys.executable, "-c", GROUP_SIGNALLED, str(ROOT), *args], capture_output=True,
                            text=True, timeout=600, start_new_session=True)  # fmt: skip
    assert result.returncode == 143, result.stderr[-3000:]
    line = one_error_line(result.stderr)
    assert line.startswith("finetune: stopped by SIGTERM at step 6 (epoch 1); checkpoint "), line
    assert (output_dir / "checkpoint-6" / "manifest.json").is_file()
