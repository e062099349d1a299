"""Checkpoints of a training run, written atomically, and resuming from them.

`checkpoints/step-K` holds accelerate's state (model, optimizer, scheduler, every process's
random-number state), the best weights so far and the loop's state, which names the run it
belongs to (`run_directory.fingerprint`): `latest` never picks another run's checkpoint.
`LoopState` is that state: defined here, with the file format it is kept in, so that the loop
imports its checkpoints and not the other way round.
"""

import dataclasses
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from safetensors.torch import load_file, save_file

from .errors import RunDirectoryError
from .files import to_strict_json
from .run_directory import describe_differences, fingerprint

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = re.compile(r"step-(\d+)")
TRAINER_STATE = "trainer_state.json"  # written last: a checkpoint without it is not complete
BEST_WEIGHTS = "best_model.safetensors"


@dataclass
class LoopState:
    """Everything the training loop needs to go on where it stopped (the rest is accelerate's state);
    saved as JSON in every checkpoint."""

    run: str  # the run's fingerprint: `latest` never resumes another run
    run_identity: dict
    step: int = 0  # optimizer steps
    epoch: int = 0
    batches: int = 0  # batches of the current epoch already trained on
    seen: int = 0  # training examples, all processes
    elapsed: float = 0.0  # training seconds before this session
    running: list = field(default_factory=list)  # losses since the last log line (tensors until saved)
    best: dict = field(default_factory=dict)  # validation metrics of the best model
    best_value: float | None = None  # of metric_for_best_model
    bad_evaluations: int = 0
    history: dict = field(default_factory=lambda: {"train": [], "eval": []})

    @classmethod
    def from_dict(cls, saved: dict) -> "LoopState":
        return cls(**{f.name: saved[f.name] for f in dataclasses.fields(cls) if f.name in saved})

    def to_dict(self) -> dict:
        """As JSON holds it (the running losses as numbers: a host sync, once per checkpoint)."""
        return {**dataclasses.asdict(self), "running": [float(loss) for loss in self.running]}

    def speed(self) -> dict:
        """Training time and throughput, for metrics.json."""
        elapsed = max(self.elapsed, 1e-9)
        return {"train_runtime_s": elapsed, "train_samples_per_second": self.seen / elapsed, "train_steps": self.step}


def _checkpoint_state(path: Path) -> dict:
    return json.loads((path / TRAINER_STATE).read_text(encoding="utf-8"))


def list_checkpoints(directory: str | os.PathLike, run: str | None = None) -> list[Path]:
    """Complete checkpoints `step-K` in `directory`, oldest first; temporary ones are ignored.

    Args:
        directory: The run's `checkpoints/` directory.
        run: Only checkpoints of the run with this fingerprint (`run_directory.fingerprint`);
            None: all.
    """
    directory = Path(directory)
    found = [p for p in directory.glob("step-*") if CHECKPOINT_NAME.fullmatch(p.name) and (p / TRAINER_STATE).is_file()]
    if run is not None:
        found = [p for p in found if _checkpoint_state(p).get("run") == run]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(accelerator, directory: str | os.PathLike, state, best_state: dict, limit: int) -> Path:
    """`accelerator.save_state` (model, optimizer, scheduler, RNG of every process) plus the loop's
    state into `directory/step-K`, atomically; keeps the newest `limit` checkpoints (0: all).

    Everything is written into `.step-K.tmp` first and renamed when complete, so a kill during the
    save leaves no directory that `list_checkpoints` would pick.
    """
    directory = Path(directory)
    state = state.to_dict()  # a LoopState
    final = directory / f"step-{state['step']}"
    staging = directory / f".{final.name}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(staging)
    # Every process writes its random-number state into the staging directory: all must be done
    # before it is renamed (a rank still writing into `.step-K.tmp` would crash).
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if best_state:
            save_file(best_state, staging / BEST_WEIGHTS)
        (staging / TRAINER_STATE).write_text(to_strict_json(state), encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        for old in list_checkpoints(directory, state.get("run"))[:-limit] if limit > 0 else []:
            shutil.rmtree(old)
        logger.info("checkpoint %s saved", final)
    accelerator.wait_for_everyone()
    return final


def resolve_checkpoint(which: str | None, directory: str | os.PathLike, identity: dict | None = None) -> Path | None:
    """`latest` -> the newest complete checkpoint in `directory` of the run with `identity`
    (`run_directory.run_identity`; None: of any run), or None if there is none; else a path, which
    must be a complete checkpoint of that run.

    Raises:
        RunDirectoryError: The path is not a complete checkpoint, or belongs to another run.
    """
    if not which:
        return None
    run = None if identity is None else fingerprint(identity)
    if which != "latest":
        path = Path(which)
        if not (path / TRAINER_STATE).is_file():
            raise RunDirectoryError(f"--resume_from_checkpoint {path}: not a complete checkpoint (no {TRAINER_STATE})")
        saved = _checkpoint_state(path)
        if run is not None and saved.get("run") != run:
            differences = describe_differences(saved.get("run_identity", {}), identity)
            raise RunDirectoryError(
                f"--resume_from_checkpoint {path}: the checkpoint belongs to a run with other settings"
                + (f" ({differences})" if differences else "")
            )
        return path
    found = list_checkpoints(directory, run)
    if not found:
        logger.warning("No checkpoint of this run in %s: training from the start", directory)
    return found[-1] if found else None


def load_checkpoint(accelerator, path: str | os.PathLike) -> tuple:
    """Restores what `save_checkpoint` wrote; returns the loop's state (`LoopState`) and the
    best weights so far."""
    path = Path(path)
    accelerator.load_state(path)
    state = LoopState.from_dict(json.loads((path / TRAINER_STATE).read_text(encoding="utf-8")))
    logger.info("Resumed from %s: epoch %d, step %d", path, state.epoch, state.step)
    best_state = load_file(path / BEST_WEIGHTS) if (path / BEST_WEIGHTS).exists() else {}
    return state, best_state


def remove_partial_checkpoints(directory: str | os.PathLike) -> None:
    """Deletes checkpoints a killed run left half written."""
    for partial in Path(directory).glob(".step-*.tmp"):
        logger.warning("removing the incomplete checkpoint %s (a run was stopped while saving it)", partial)
        shutil.rmtree(partial, ignore_errors=True)
