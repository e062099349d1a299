"""One run per output directory: what a run is, and when a directory may take a new one.

A run is named by its *identity*: the arguments that change what is trained (data, model,
optimisation, seed), not those that only say where outputs go or how often to log and save. The
identity is written in `config.yaml` and in every checkpoint, so that

- a new run never mixes its files with a finished or different run's: such a directory is
  refused unless `--overwrite_output_dir` (it is then emptied, after the data and arguments
  were checked, so a run that fails on bad input loses nothing that was there);
- `--resume_from_checkpoint latest` only ever picks a checkpoint of the same run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

import yaml

from .errors import RunDirectoryError
from .files import write_text_atomic

CONFIG_FILE = "config.yaml"
RESULTS_FILE = "metrics.json"
CHECKPOINTS = "checkpoints"
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
# What the recipes (and `finetune evaluate`, into evaluation/) write into a run directory; anything
# else there is the user's and is never deleted.
RUN_ENTRIES = frozenset(
    {
        CONFIG_FILE, RESULTS_FILE, CHECKPOINTS, "best", "base", "merged", "evaluation", "training_curves.png",
        "confusion_matrix.png", "attention.html", "pretrain_config.yaml", "config.json",
        "model.safetensors", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
        "generation_config.json", "tokenizer.json", "runs", "test_predictions.csv",
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


def _is_run_entry(name: str) -> bool:
    # Hidden names are the recipes' temporary files and directories (.best-xxxx, .metrics.json.xx.tmp).
    return name in RUN_ENTRIES or name.startswith(".")


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
    names = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    if not names:
        return
    foreign = [name for name in names if not _is_run_entry(name)]
    if foreign:
        raise RunDirectoryError(
            f"--output_dir {directory}: holds files that no run wrote ({_listing(foreign)}); "
            "give an empty or new directory"
        )
    if overwrite:
        return
    hint = "give --overwrite_output_dir to replace it, or another --output_dir"
    if (directory / RESULTS_FILE).exists():
        raise RunDirectoryError(f"--output_dir {directory}: holds a finished run ({RESULTS_FILE}); {hint}")
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
        raise RunDirectoryError(f"--output_dir {directory}: holds an unfinished run; {resume_hint}{hint}")


def empty_output_dir(directory: str | os.PathLike) -> None:
    """Deletes what earlier runs wrote into `directory` (`check_output_dir` made sure that is all there is)."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    for entry in directory.iterdir():
        if not _is_run_entry(entry.name):  # checked before; a file that appeared since is kept
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def start_output_dir(directory: str | os.PathLike, settings: str, *, overwrite: bool) -> None:
    """Empties `directory` with `--overwrite_output_dir`, then writes the run's settings (`config.yaml`).
    Called once `check_output_dir` and every other check passed, by the main process."""
    if overwrite:
        empty_output_dir(directory)
    write_text_atomic(settings, Path(directory) / CONFIG_FILE)
