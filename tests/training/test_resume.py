"""Kill-safe training: a run killed with SIGKILL mid-epoch, and again while writing a checkpoint,
resumes from its last complete checkpoint and ends with the same weights and metrics as a run
that was never stopped."""

import json
import signal
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, assert_same_run, tiny_recipe_args

from finetune.errors import RunDirectoryError
from finetune.recipes.train_bilstm_attention import main
from finetune.training.checkpointing import list_checkpoints, resolve_checkpoint

# Runs the recipe and SIGKILLs itself before optimizer step KILL_AT_STEP, or right after
# accelerate wrote the KILL_IN_SAVE-th checkpoint's state (before the checkpoint was complete).
KILLING_RECIPE = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from accelerate import Accelerator
from torch.optim.optimizer import register_optimizer_step_pre_hook

kill_at, kill_in_save = int(os.environ.get("KILL_AT_STEP", 0)), int(os.environ.get("KILL_IN_SAVE", 0))
calls = {"step": 0, "save": 0}

def before_step(optimizer, args, kwargs):
    calls["step"] += 1
    if calls["step"] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

register_optimizer_step_pre_hook(before_step)
save_state = Accelerator.save_state

def save_then_die(self, *args, **kwargs):
    save_state(self, *args, **kwargs)
    calls["save"] += 1
    if calls["save"] == kill_in_save:
        os.kill(os.getpid(), signal.SIGKILL)

Accelerator.save_state = save_then_die
from finetune.recipes.train_bilstm_attention import main
main(sys.argv[2:])
"""

# 240 training texts in batches of 16: 15 steps per epoch, 45 in all; a checkpoint every 4 steps.
RUN = [
    "--num_train_epochs",
    "3",
    "--save_strategy",
    "steps",
    "--save_steps",
    "4",
    "--save_total_limit",
    "3",
    "--word_dropout",
    "0.1",
]


def run_killed(args, **kill):
    # the threads of this process, which trains the uninterrupted run: float sums then add up alike
    env = {**{k: str(v) for k, v in kill.items()}, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    result = subprocess.run(
        [sys.executable, "-c", KILLING_RECIPE, str(ROOT), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, **env},
    )
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def uninterrupted(reviews_csv, tiny_vectors, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("uninterrupted")
    results = main(tiny_recipe_args(reviews_csv, tiny_vectors, output_dir, *RUN))
    return output_dir, results


def test_killed_twice_then_resumed_matches_the_uninterrupted_run(uninterrupted, reviews_csv, tiny_vectors, tmp_path):
    reference_dir, reference = uninterrupted
    output_dir = tmp_path / "run"
    args = tiny_recipe_args(reviews_csv, tiny_vectors, output_dir, *RUN)

    run_killed(args, KILL_AT_STEP=23)  # mid-epoch 2 (steps 16-30), after the checkpoint at step 20
    assert [p.name for p in list_checkpoints(output_dir)] == ["checkpoint-12", "checkpoint-16", "checkpoint-20"]
    assert not (output_dir / "metrics.json").exists()

    resume = [*args, "--resume_from_checkpoint", "latest"]
    run_killed(resume, KILL_IN_SAVE=2)  # saves checkpoint-24, dies while saving checkpoint-28
    assert (output_dir / ".checkpoint-28.tmp").is_dir()
    assert resolve_checkpoint("latest", output_dir).name == "checkpoint-24"

    results = main(resume)
    assert not (output_dir / ".checkpoint-28.tmp").exists()
    files = ("model.safetensors", "checkpoint-45/model.safetensors")
    assert_same_run(output_dir, results, reference_dir, reference, steps=45, files=files)


def test_checkpoints_keep_the_newest_and_hold_the_loop_state(uninterrupted):
    output_dir, _ = uninterrupted
    names = [p.name for p in list_checkpoints(output_dir)]
    assert names == ["checkpoint-40", "checkpoint-44", "checkpoint-45"]
    state = json.loads((output_dir / "checkpoint-44" / "trainer_state.json").read_text(encoding="utf-8"))
    assert (state["step"], state["epoch"], state["batches"]) == (44, 2, 14)
    files = {p.name for p in (output_dir / "checkpoint-44").iterdir()}
    assert {
        "model.safetensors",
        "optimizer.bin",
        "scheduler.bin",
        "random_states_0.pkl",
        "best_model.safetensors",
    } <= files


def test_resume_latest_without_checkpoints_starts_over_and_a_bad_path_is_an_error(tmp_path):
    assert resolve_checkpoint("latest", tmp_path / "checkpoints") is None
    (tmp_path / "checkpoint-3").mkdir()
    with pytest.raises(RunDirectoryError, match="checkpoint-3: not a complete checkpoint"):
        resolve_checkpoint(str(tmp_path / "checkpoint-3"), tmp_path)
