"""Checkpoints of a training run, written atomically, checked before they are resumed.

`OUTPUT_DIR/checkpoint-K` (K: the optimizer step, as transformers' Trainer names them, so that
`transformers.trainer_utils.get_last_checkpoint(OUTPUT_DIR)` finds the newest) holds accelerate's state
(model, optimizer, scheduler, every process's random-number state), the best weights so far, the weight
average (`--ema_decay`) and the loop's state, which names the run it belongs to (`run_directory.fingerprint`):
`latest` never picks another run's checkpoint. `manifest.json`, written last, holds every file's size and
sha256: a checkpoint damaged since (a file cut short, changed or missing) is passed over by `latest` and refused by
path, so a resumed run is never silently another run. No pickle of a checkpoint is ever loaded with
`weights_only=False` (which runs whatever code it names): the weight average is saved as
safetensors, not through accelerate's `register_for_checkpointing`, and accelerate's own pickles are
loaded first as accelerate loads them, so that one it would skip in silence (its random states) or
fail on with a traceback is reported as a damaged file.
`LoopState` is the loop's state: defined here, with the file format it is kept in, so that the loop
imports its checkpoints and not the other way round.
"""

import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils.other import load
from safetensors.torch import load_file, load_model, save_file, save_model

from finetune.errors import RunDirectoryError, storage_error
from finetune.files import to_strict_json
from finetune.training.manifests import MANIFEST, find_damage, read_manifest, write_manifest
from finetune.training.run_directory import (
    CHECKPOINT_NAME,
    DATA,
    describe_data_change,
    describe_differences,
    fingerprint,
)

logger = logging.getLogger(__name__)

# An earlier version's layout (OUTPUT_DIR/checkpoints/step-K, the model in OUTPUT_DIR/best/), which is not resumed
EARLIER_CHECKPOINT = re.compile(r"(^|/)checkpoints/step-\d+$")
TRAINER_STATE = "trainer_state.json"  # the loop's state; a checkpoint from before manifests ends with it
BEST_WEIGHTS = "best_model.safetensors"
AVERAGE_WEIGHTS = "ema_model.safetensors"  # the weight average (`--ema_decay`)
# accelerate's pickles of objects given to `register_for_checkpointing`, which it loads with
# weights_only=False: never handed to it (an earlier version saved the weight average so)
CUSTOM_STATE = re.compile(r"custom_checkpoint_(\d+)\.pkl")
RANDOM_STATES = "random_states_{}.pkl"
PICKLES = (".bin", ".pkl", ".pt")  # what accelerate writes with torch.save
START_OVER = "resume from another checkpoint or start over with --overwrite_output_dir"
# torch.save's failures to write, which name neither file nor cause ("basic_ios::clear: iostream error",
# "PytorchStreamWriter failed writing file", on a full disk "[enforce fail at inline_container.cc] unexpected pos")
WRITE_FAILED = re.compile(r"iostream|stream ?writer|write|space|disk|inline_container|unexpected pos", re.IGNORECASE)


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
    finished: bool = False  # the loop is done (last step, or early stopping): resuming goes straight to the outputs

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
    """The checkpoint's `trainer_state.json`; {} when it cannot be read (a damaged checkpoint)."""
    try:
        saved = json.loads((path / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


def _is_complete(path: Path) -> bool:
    return (path / MANIFEST).is_file() or (path / TRAINER_STATE).is_file()


def list_checkpoints(directory: str | os.PathLike, run: str | None = None) -> list[Path]:
    """Complete checkpoints `checkpoint-K` in `directory` (with their manifest, or with `trainer_state.json` if
    saved before manifests), oldest first; temporary ones are ignored. Whether their files are still as
    they were saved is `checkpoint_damage`'s question.

    Args:
        directory: The run directory (OUTPUT_DIR).
        run: Only checkpoints of the run with this fingerprint (`run_directory.fingerprint`);
            None: all.
    """
    directory = Path(directory)
    found = [p for p in directory.glob("checkpoint-*") if CHECKPOINT_NAME.fullmatch(p.name) and _is_complete(p)]
    if run is not None:
        found = [p for p in found if _checkpoint_state(p).get("run") == run]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def checkpoint_damage(path: str | os.PathLike) -> str | None:
    """What is wrong with the files of checkpoint `path`, as "FILE: what" for the first file found amiss
    (missing, another size, or another sha256 than its manifest lists), or None when all are as saved.
    A checkpoint saved before manifests cannot be checked: None, with a warning."""
    try:
        entries = read_manifest(path)
    except ValueError as error:
        return str(error)
    if entries is None:
        logger.warning("%s has no %s (saved by an earlier version): its files cannot be checked", path, MANIFEST)
        return None
    return find_damage(path, entries)


def _same_run(saved: dict, identity: dict | None) -> bool:
    """Whether a checkpoint's state (`trainer_state.json`) is of the run with `identity`; one saved before the
    data's content was part of a run's identity counts when all else matches (a WARNING: its data cannot be
    checked)."""
    if identity is None or saved.get("run") == fingerprint(identity):
        return True
    if DATA in saved.get("run_identity", {DATA: None}) or DATA not in identity:
        return False
    if saved.get("run") != fingerprint({key: value for key, value in identity.items() if key != DATA}):
        return False
    logger.warning("the checkpoints were saved before finetune recorded the data's content: it cannot be checked")
    return True


def _checked_path(path: Path, identity: dict | None) -> Path:
    """`--resume_from_checkpoint PATH`: a complete, undamaged checkpoint of the run with `identity`."""
    flag = f"--resume_from_checkpoint {path}"
    if not _is_complete(path):
        raise RunDirectoryError(f"{flag}: not a complete checkpoint (no {TRAINER_STATE})")
    damage = checkpoint_damage(path)
    if damage is not None:
        raise RunDirectoryError(f"{flag}: the checkpoint is damaged: {damage}; {START_OVER}")
    saved = _checkpoint_state(path)
    if not saved:
        raise RunDirectoryError(f"{path / TRAINER_STATE}: cannot be read (damaged, or not written by finetune)")
    if not _same_run(saved, identity):
        theirs = saved.get("run_identity", {})
        changed = describe_data_change(theirs, identity, path.name)
        if changed:
            raise RunDirectoryError(changed)
        differences = describe_differences(theirs, identity)
        raise RunDirectoryError(
            f"{flag}: the checkpoint belongs to a run with other settings"
            + (f" ({differences})" if differences else "")
        )
    return path


def _refuse_earlier_layout(which: str, directory: Path) -> None:
    """An earlier version's checkpoint is one line, not a resume that would leave the model in `best/`."""
    if which == "latest":
        earlier = not list_checkpoints(directory) and any(directory.glob("checkpoints/step-*"))
    else:
        earlier = EARLIER_CHECKPOINT.search(Path(which).as_posix()) is not None
    if not earlier:
        return
    raise RunDirectoryError(
        f"--resume_from_checkpoint {which}: a checkpoint of an earlier finetune's layout (checkpoints/step-K, the "
        "model in best/), which this version does not resume; finish that run with the version that started it, "
        "or start over with --overwrite_output_dir"
    )


def resolve_checkpoint(which: str | None, directory: str | os.PathLike, identity: dict | None = None) -> Path | None:
    """`latest` -> the newest undamaged checkpoint in `directory` of the run with `identity`
    (`run_directory.run_identity`; None: of any run), passing over damaged ones with a warning naming
    the file, or None if there is none; else a path, which must be an undamaged checkpoint of that run.

    Raises:
        RunDirectoryError: The path is not a complete, undamaged checkpoint of this run; with `latest`,
            every checkpoint of this run is damaged, or there are only checkpoints of this run on
            other data (the message names the file that changed).
    """
    if not which:
        return None
    _refuse_earlier_layout(which, Path(directory))
    if which != "latest":
        return _checked_path(Path(which), identity)
    data_changed, damaged = None, []
    for path in reversed(list_checkpoints(directory)):
        saved = _checkpoint_state(path)
        if saved and not _same_run(saved, identity):
            data_changed = data_changed or describe_data_change(saved.get("run_identity", {}), identity, path.name)
            continue
        damage = checkpoint_damage(path) or (None if saved else f"{path / TRAINER_STATE}: cannot be read")
        if damage is None:
            return path
        logger.warning("Checkpoint %s is damaged (%s): passing over it for an earlier one", path, damage)
        damaged.append(damage)
    if damaged:
        raise RunDirectoryError(
            f"--resume_from_checkpoint latest: no undamaged checkpoint of this run in {directory} ({damaged[0]}); "
            "start over with --overwrite_output_dir"
        )
    if data_changed:
        raise RunDirectoryError(data_changed)
    logger.warning("No checkpoint of this run in %s: training from the start", directory)
    return None


def save_checkpoint(
    accelerator, directory: str | os.PathLike, state, best_state: dict, limit: int, average=None
) -> Path:
    """`accelerator.save_state` (model, optimizer, scheduler, RNG of every process), the best weights, the
    weight average and the loop's state into `directory/checkpoint-K`, atomically, with their manifest; keeps
    the newest `limit` checkpoints of the run (0: all).

    Everything is written into `.checkpoint-K.tmp` first and renamed when complete, so a kill during the
    save leaves no directory that `list_checkpoints` would pick.

    Args:
        accelerator: The run's `Accelerator`.
        directory: The run directory (OUTPUT_DIR).
        state: The loop's `LoopState`.
        best_state: The best weights so far ({}: none yet).
        limit: `--save_total_limit`.
        average: The weight average (`training.create_weight_average`), or None.

    Raises:
        StorageError: A file could not be written (no space left, a read-only disk); the message names
            the checkpoint, and nothing of it is left behind.
    """
    directory = Path(directory)
    state = state.to_dict()  # a LoopState
    final = directory / f"checkpoint-{state['step']}"
    staging = directory / f".{final.name}.tmp"
    try:
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(staging)
        # Every process writes its random-number state into the staging directory: all must be done
        # before the manifest lists them and the directory is renamed.
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if best_state:
                save_file(best_state, staging / BEST_WEIGHTS)
            if average is not None:  # as safetensors: accelerate would pickle it, and unpickle it unchecked
                save_model(average, str(staging / AVERAGE_WEIGHTS))
            (staging / TRAINER_STATE).write_text(to_strict_json(state), encoding="utf-8")
            write_manifest(staging)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(staging, final)
    except (OSError, RuntimeError) as error:
        if not isinstance(error, OSError) and not WRITE_FAILED.search(str(error)):
            raise
        shutil.rmtree(staging, ignore_errors=True)
        raise storage_error(error, final, "saving the checkpoint") from error
    if accelerator.is_main_process:
        for old in list_checkpoints(directory, state.get("run"))[:-limit] if limit > 0 else []:
            shutil.rmtree(old)
        logger.info("checkpoint %s saved", final)
    accelerator.wait_for_everyone()
    return final


def _reason(error: BaseException) -> str:
    """A failed load's gist in one line (torch's own message is a page that advises weights_only=False)."""
    text = str(error)
    found = re.search(r"WeightsUnpickler error: ([^\n]*)", text)
    line = found.group(1) if found else next((part for part in text.splitlines() if part.strip()), "")
    return (line.split(". ")[0].strip().rstrip(".") or type(error).__name__)[:200]


def _read(file: Path, reader):
    """`reader(file)`, a failure of which is a `RunDirectoryError` naming `file`."""
    try:
        return reader(file)
    except Exception as error:  # whatever a damaged file makes the reader raise
        raise RunDirectoryError(
            f"{file}: cannot be read (damaged, or not written by finetune): {_reason(error)}; {START_OVER}"
        ) from error


def _random_states(file: Path) -> dict:
    states = load(file, map_location="cpu")
    keys = {"random_state", "numpy_random_seed", "torch_manual_seed"}
    if not isinstance(states, dict) or not keys <= states.keys():
        raise ValueError("not random-number states")
    if not isinstance(states["torch_manual_seed"], torch.Tensor) or states["torch_manual_seed"].dtype != torch.uint8:
        raise ValueError("not random-number states")
    return states


def _checked_files(path: Path, process_index: int) -> list[str]:
    """The checkpoint's files as its manifest lists them (all there are, saved before manifests); this
    process's pickles among them loaded as accelerate will load them."""
    try:
        entries = read_manifest(path)
    except ValueError as error:
        raise RunDirectoryError(f"{error}; {START_OVER}") from None
    present = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    names = present if entries is None else [name for name in present if name in entries]
    strangers = [str(path / name) for name in present if name not in names and name != MANIFEST]
    if strangers:
        logger.warning("Not in the checkpoint's manifest (not written by finetune), ignored: %s", ", ".join(strangers))
    own_states = RANDOM_STATES.format(process_index)
    if own_states not in names:  # accelerate would go on without them: a silently different run
        raise RunDirectoryError(f"{path / own_states}: missing; {START_OVER}")
    for name in names:
        random_states = re.fullmatch(r"random_states_(\d+)\.pkl", name)
        if random_states and name == own_states:
            _read(path / name, _random_states)
        elif not random_states and not CUSTOM_STATE.fullmatch(name) and name.endswith(PICKLES):
            _read(path / name, lambda file: load(file, map_location="cpu"))
    return names


def _load_average(average, path: Path, names: list[str]) -> None:
    file = path / AVERAGE_WEIGHTS
    legacy = path / "custom_checkpoint_0.pkl"  # an earlier version's, through register_for_checkpointing
    if file.name in names:
        _read(file, lambda f: load_model(average, f))
    elif legacy.name in names:
        average.load_state_dict(_read(legacy, lambda f: load(f, map_location="cpu")))
    else:
        raise RunDirectoryError(f"{file}: missing (this run averages weights, --ema_decay); {START_OVER}")


def load_checkpoint(accelerator, path: str | os.PathLike, average=None) -> tuple:
    """Restores what `save_checkpoint` wrote (`resolve_checkpoint` checked it against its manifest);
    returns the loop's state (`LoopState`) and the best weights so far.

    accelerate is handed the files the manifest lists, never a `custom_checkpoint_*.pkl` (which it
    would unpickle with weights_only=False). Its pickles are loaded first as it loads them
    (weights_only=True, its safe globals): one that fails is an error naming the file, not
    accelerate's traceback nor, for random states, its silent "Could not load random states".

    Args:
        accelerator: The run's `Accelerator`, with everything prepared.
        path: The checkpoint (`resolve_checkpoint`).
        average: The weight average to restore (`training.create_weight_average`), or None.

    Raises:
        RunDirectoryError: A file is missing or cannot be read; the message names it.
    """
    path = Path(path)
    names = _checked_files(path, accelerator.process_index)
    # accelerate unpickles every custom_checkpoint_*.pkl of the directory it is given, and refuses one it has
    # no registered object for: it is given a directory of links to the files it may read, and only those.
    with tempfile.TemporaryDirectory(prefix=f"finetune-{path.name}-") as view:
        for name in (name for name in names if not CUSTOM_STATE.fullmatch(name)):
            (Path(view) / name).parent.mkdir(parents=True, exist_ok=True)
            (Path(view) / name).symlink_to((path / name).resolve())
        accelerator.load_state(view)
    if average is not None:
        _load_average(average, path, names)
    state = LoopState.from_dict(_read(path / TRAINER_STATE, lambda f: json.loads(f.read_text(encoding="utf-8"))))
    logger.info("Resumed from %s: epoch %d, step %d", path, state.epoch, state.step)
    best_state = _read(path / BEST_WEIGHTS, load_file) if BEST_WEIGHTS in names else {}
    return state, best_state


def remove_partial_checkpoints(directory: str | os.PathLike) -> None:
    """Deletes checkpoints a killed run left half written."""
    for partial in Path(directory).glob(".checkpoint-*.tmp"):
        logger.warning("removing the incomplete checkpoint %s (a run was stopped while saving it)", partial)
        shutil.rmtree(partial, ignore_errors=True)
