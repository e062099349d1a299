"""Checkpoints that cannot be tampered with or silently damaged (issue 31).

No pickle of a checkpoint is ever loaded with weights_only=False (the weight average is safetensors); the
manifest catches a file cut short, changed or missing (`latest` passes over that checkpoint, a path is
refused); a pickle that accelerate would skip in silence or fail on with a traceback is an error naming
it; data changed since a checkpoint is named; a disk that fills while saving is one line naming the
checkpoint, and leaves nothing behind.
"""

import errno
import json
import logging
import shutil

import pytest
import torch
from conftest import assert_same_run, tiny_recipe_args
from safetensors.torch import load_file
from test_resume import run_killed

from finetune.errors import RunDirectoryError, StorageError, message_of, report_errors
from finetune.recipes.train_bilstm_attention import main
from finetune.training.checkpointing import (
    LoopState,
    list_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
)
from finetune.training.manifests import write_manifest
from finetune.training.run_directory import describe_data_change, fingerprint

START_OVER = "resume from another checkpoint or start over with --overwrite_output_dir"
# 12 steps of batches of 16, a checkpoint and a validation every 4; word dropout: the random states matter.
EMA_RUN = [
    "--ema_decay",
    "0.9",
    "--max_steps",
    "12",
    "--save_strategy",
    "steps",
    "--save_steps",
    "4",
    "--eval_strategy",
    "steps",
    "--eval_steps",
    "4",
    "--word_dropout",
    "0.1",
]


class Payload:
    """Unpickled with weights_only=False, writes `marker`: what a planted checkpoint file could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


@pytest.fixture(scope="module")
def ema_reference(reviews_csv, tiny_vectors, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("ema_reference")
    return output_dir, main(tiny_recipe_args(reviews_csv, tiny_vectors, output_dir, *EMA_RUN))


@pytest.fixture(scope="module")
def ema_killed(reviews_csv, tiny_vectors, tmp_path_factory):
    """The same run killed before step 10: checkpoint-4 and checkpoint-8 (each test resumes a copy)."""
    output_dir = tmp_path_factory.mktemp("ema_killed") / "run"
    run_killed(tiny_recipe_args(reviews_csv, tiny_vectors, output_dir, *EMA_RUN), KILL_AT_STEP=10)
    return output_dir


def resume_args(reviews_csv, tiny_vectors, output_dir, which="latest"):
    return [*tiny_recipe_args(reviews_csv, tiny_vectors, output_dir, *EMA_RUN), "--resume_from_checkpoint", which]


def assert_same_ema_run(output_dir, results, reference):
    files = ("model.safetensors", "checkpoint-12/ema_model.safetensors")
    assert_same_run(output_dir, results, *reference, steps=12, files=files)


def test_a_planted_pickle_is_never_loaded_and_the_average_resumes_exactly(
    ema_killed, ema_reference, reviews_csv, tiny_vectors, tmp_path, caplog
):
    output_dir = tmp_path / "run"
    shutil.copytree(ema_killed, output_dir)
    checkpoints = list_checkpoints(output_dir)
    assert [p.name for p in checkpoints] == ["checkpoint-4", "checkpoint-8"]
    assert (checkpoints[-1] / "ema_model.safetensors").is_file() and (checkpoints[-1] / "manifest.json").is_file()
    assert not list(output_dir.glob("checkpoint-*/custom_checkpoint_*"))  # the average is no longer a pickle
    marker = tmp_path / "code-ran"
    for checkpoint in checkpoints:
        torch.save(Payload(marker), checkpoint / "custom_checkpoint_0.pkl")

    with caplog.at_level(logging.INFO, logger="finetune.training.checkpointing"):
        results = main(resume_args(reviews_csv, tiny_vectors, output_dir))

    assert not marker.exists()
    assert f"Resumed from {checkpoints[-1]}:" in caplog.text  # resumed there, the stranger ignored
    assert f"{checkpoints[-1] / 'custom_checkpoint_0.pkl'}" in caplog.text
    assert_same_ema_run(output_dir, results, ema_reference)


def test_a_damaged_latest_checkpoint_is_passed_over_and_the_run_ends_as_if_never_stopped(
    ema_killed, ema_reference, reviews_csv, tiny_vectors, tmp_path, caplog
):
    output_dir = tmp_path / "run"
    shutil.copytree(ema_killed, output_dir)
    damaged = output_dir / "checkpoint-8" / "random_states_0.pkl"
    damaged.write_bytes(damaged.read_bytes()[:-100])  # cut short, as by a full disk or a copy stopped midway

    with caplog.at_level(logging.INFO, logger="finetune.training.checkpointing"):
        results = main(resume_args(reviews_csv, tiny_vectors, output_dir))

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"{damaged}: " in line and "passing over it" in line for line in warnings), warnings
    assert f"Resumed from {output_dir / 'checkpoint-4'}:" in caplog.text
    assert_same_ema_run(output_dir, results, ema_reference)


def flip_a_byte(file):
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "what"),
    [
        (lambda f: f.write_bytes(f.read_bytes()[:-1]), r"\d[\d,]* bytes, [\d,]+ when saved"),
        (flip_a_byte, "same size, other content than when saved"),
        (lambda f: f.unlink(), "missing"),
    ],
    ids=["truncated", "byte-flipped", "deleted"],
)
def test_the_manifest_finds_damage_latest_passes_over_it_a_path_is_refused(ema_killed, tmp_path, damage, what, caplog):
    run_dir = shutil.copytree(ema_killed, tmp_path / "run")
    state = json.loads((run_dir / "checkpoint-8" / "trainer_state.json").read_text(encoding="utf-8"))
    identity = state["run_identity"]
    assert resolve_checkpoint("latest", run_dir, identity) == run_dir / "checkpoint-8"
    file = run_dir / "checkpoint-8" / "random_states_0.pkl"
    damage(file)

    with caplog.at_level(logging.WARNING, logger="finetune.training.checkpointing"):
        assert resolve_checkpoint("latest", run_dir, identity) == run_dir / "checkpoint-4"
    assert f"{file}: " in caplog.text
    damaged = f"checkpoint-8: the checkpoint is damaged: {file}: {what}; {START_OVER}$"
    with pytest.raises(RunDirectoryError, match=damaged):
        resolve_checkpoint(str(run_dir / "checkpoint-8"), run_dir, identity)

    damage(run_dir / "checkpoint-4" / "model.safetensors")  # nothing undamaged left: never a silent fresh start
    with pytest.raises(RunDirectoryError, match="no undamaged checkpoint of this run .*checkpoint-8/random_states_0"):
        resolve_checkpoint("latest", run_dir, identity)


def test_a_checkpoint_from_before_manifests_is_still_resumed_with_a_warning(ema_killed, tmp_path, caplog):
    run_dir = shutil.copytree(ema_killed, tmp_path / "run")
    (run_dir / "checkpoint-8" / "manifest.json").unlink()
    state = json.loads((run_dir / "checkpoint-8" / "trainer_state.json").read_text(encoding="utf-8"))
    identity = state["run_identity"]
    with caplog.at_level(logging.WARNING, logger="finetune.training.checkpointing"):
        assert resolve_checkpoint("latest", run_dir, identity) == run_dir / "checkpoint-8"
    assert "checkpoint-8 has no manifest.json" in caplog.text


def test_an_earlier_versions_pickled_average_is_loaded_safely(
    ema_killed, ema_reference, reviews_csv, tiny_vectors, tmp_path
):
    """Before this version the average was accelerate's `custom_checkpoint_0.pkl` and there was no manifest:
    such a checkpoint resumes (its pickle loaded with weights_only=True) into the same run."""
    output_dir = tmp_path / "run"
    shutil.copytree(ema_killed, output_dir)
    step8 = output_dir / "checkpoint-8"
    torch.save(load_file(step8 / "ema_model.safetensors"), step8 / "custom_checkpoint_0.pkl")
    (step8 / "ema_model.safetensors").unlink()
    (step8 / "manifest.json").unlink()

    results = main(resume_args(reviews_csv, tiny_vectors, output_dir, str(step8)))

    assert_same_ema_run(output_dir, results, ema_reference)


@pytest.mark.parametrize("name", ["random_states_0.pkl", "optimizer.bin", "custom_checkpoint_0.pkl"])
def test_a_pickle_accelerate_would_skip_or_fail_on_is_an_error_naming_it(
    ema_killed, reviews_csv, tiny_vectors, tmp_path, name
):
    """Whoever plants a file can rewrite the manifest too: the pickles are still loaded only as
    weights, and one that is not is refused by name (accelerate would skip random states it cannot load,
    and print a page advising weights_only=False for the others)."""
    output_dir = tmp_path / "run"
    shutil.copytree(ema_killed, output_dir)
    step8 = output_dir / "checkpoint-8"
    marker = tmp_path / "code-ran"
    torch.save(Payload(marker), step8 / name)
    if name.startswith("custom_checkpoint"):  # as a checkpoint of an earlier version holds the average
        (step8 / "ema_model.safetensors").unlink()
    (step8 / "manifest.json").unlink()
    write_manifest(step8)

    with pytest.raises(RunDirectoryError) as error:
        main(resume_args(reviews_csv, tiny_vectors, output_dir, str(step8)))

    message = message_of(error.value)
    assert message.startswith(f"{step8 / name}: cannot be read (damaged, or not written by finetune): "), message
    assert message.endswith(f"; {START_OVER}") and "\n" not in message and "weights_only" not in message
    assert not marker.exists()


def test_an_explicit_damaged_checkpoint_is_one_line_naming_the_file(
    ema_killed, reviews_csv, tiny_vectors, tmp_path, capsys
):
    output_dir = tmp_path / "run"
    shutil.copytree(ema_killed, output_dir)
    step8 = output_dir / "checkpoint-8"
    flip_a_byte(step8 / "optimizer.bin")

    with pytest.raises(SystemExit) as stopped:
        report_errors("train_bilstm_attention.py")(main)(resume_args(reviews_csv, tiny_vectors, output_dir, str(step8)))

    assert stopped.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1] == (
        f"train_bilstm_attention.py: error: --resume_from_checkpoint {step8}: the checkpoint is damaged: "
        f"{step8 / 'optimizer.bin'}: same size, other content than when saved; {START_OVER}"
    )
    assert "Traceback" not in "\n".join(lines)


# ##### Data changed since the checkpoint #####


def identity(size=12_345, content="aaaa", learning_rate=0.01, flag="train_file", path="data/train.csv"):
    return {"learning_rate": learning_rate, "data_fingerprint": {flag: {"path": path, "size": size, "hash": content}}}


def test_a_data_change_is_described_file_by_file():
    tail = "; resume with the data as it was, or start over with --overwrite_output_dir"
    assert describe_data_change(identity(), identity(12_400, "bbbb"), "checkpoint-20") == (
        "--train_file data/train.csv: the file changed since checkpoint-20 was saved (12,345 -> 12,400 bytes)" + tail
    )
    assert describe_data_change(identity(), identity(content="bbbb"), "checkpoint-20") == (
        "--train_file data/train.csv: the file changed since checkpoint-20 was saved (same size, other content)" + tail
    )
    named = {"flag": "dataset_name", "path": "seamew/ChnSentiCorp"}
    assert describe_data_change(identity(1000, **named), identity(1200, "bbbb", **named), "checkpoint-4") == (
        "--dataset_name seamew/ChnSentiCorp: the data set changed since checkpoint-4 was saved "
        "(1,000 -> 1,200 rows)" + tail
    )
    theirs, ours = identity(), identity(content="bbbb")
    ours["data_fingerprint"]["test_file"] = theirs["data_fingerprint"]["test_file"] = {"path": "t.csv", "size": 9}
    changed = describe_data_change(theirs, ours, "checkpoint-20")
    assert changed.startswith("--train_file data/train.csv: the file changed")
    assert describe_data_change(identity(), identity(), "checkpoint-20") is None  # the same data
    assert describe_data_change(identity(), identity(content="bbbb", learning_rate=0.02), "checkpoint-20") is None
    no_data = {"learning_rate": 0.01}  # saved before data fingerprints
    assert describe_data_change(no_data, identity(), "checkpoint-20") is None


def fake_checkpoint(directory, step: int, run_identity: dict):
    path = directory / f"checkpoint-{step}"
    path.mkdir(parents=True)
    state = {"step": step, "run": fingerprint(run_identity), "run_identity": run_identity}
    (path / "trainer_state.json").write_text(json.dumps(state), encoding="utf-8")
    write_manifest(path)
    return path


def test_resuming_on_changed_data_is_refused_naming_the_file(tmp_path, caplog):
    theirs, ours = identity(), identity(12_400, "bbbb")
    fake_checkpoint(tmp_path, 12, theirs)
    fake_checkpoint(tmp_path, 20, theirs)
    changed = r"--train_file data/train.csv: the file changed since checkpoint-{} was saved \(12,345 -> 12,400 "
    with pytest.raises(RunDirectoryError, match=changed.format(20)):
        resolve_checkpoint("latest", tmp_path, ours)
    with pytest.raises(RunDirectoryError, match=changed.format(12)):
        resolve_checkpoint(str(tmp_path / "checkpoint-12"), tmp_path, ours)
    # Other settings too: another run, not this one on other data (latest starts over, as before).
    with caplog.at_level(logging.WARNING, logger="finetune.training.checkpointing"):
        assert resolve_checkpoint("latest", tmp_path, identity(12_400, "bbbb", learning_rate=0.02)) is None
    assert "No checkpoint of this run" in caplog.text
    # A checkpoint of this run on this data is resumed, whatever else is there.
    fake_checkpoint(tmp_path, 4, ours)
    assert resolve_checkpoint("latest", tmp_path, ours) == tmp_path / "checkpoint-4"


# ##### A full or read-only disk while saving #####


def iostream_error(*args, **kwargs):
    # what torch.save raises on a full disk: it names neither the file nor the cause
    raise RuntimeError(
        "[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0 basic_ios::clear: iostream error"
    )


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def read_only(*args, **kwargs):
    raise OSError(errno.EROFS, "Read-only file system")


@pytest.mark.parametrize(
    ("target", "failure", "advice"),
    [
        ("torch.save", iostream_error, "iostream error; check that its disk has space"),
        ("accelerate.Accelerator.save_state", no_space, "no space left on the disk"),
        ("finetune.training.checkpointing.write_manifest", read_only, "the file system is read-only; write elsewhere"),
    ],
)
def test_a_failed_save_is_one_line_naming_the_checkpoint_and_leaves_nothing(
    accelerator, tmp_path, monkeypatch, target, failure, advice
):
    model, optimizer = accelerator.prepare(torch.nn.Linear(2, 2), torch.optim.SGD(torch.nn.Linear(2, 2).parameters()))
    monkeypatch.setattr(target, failure)
    checkpoints = tmp_path / "checkpoints"

    with pytest.raises(StorageError) as error:
        save_checkpoint(accelerator, checkpoints, LoopState(run="r", run_identity={}, step=4), {}, 0)

    message = message_of(error.value)
    assert message.startswith(f"{checkpoints / 'checkpoint-4'}: saving the checkpoint: ") and advice in message, message
    assert "\n" not in message
    assert list(checkpoints.iterdir()) == []  # no staging directory left behind


def test_a_failure_that_is_not_the_disks_is_not_reported_as_one(accelerator, tmp_path, monkeypatch):
    def bug(*args, **kwargs):
        raise RuntimeError("CUDA error: device-side assert triggered")

    monkeypatch.setattr("accelerate.Accelerator.save_state", bug)
    with pytest.raises(RuntimeError, match="device-side assert"):
        save_checkpoint(accelerator, tmp_path, LoopState(run="r", run_identity={}, step=4), {}, 0)
