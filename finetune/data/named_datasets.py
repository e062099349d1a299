"""Load a dataset by name, as transformers' `run_classification.py --dataset_name` does.

The name is a directory written by `save_to_disk` (read with `datasets.load_from_disk`), a local
directory of data files or a Hugging Face Hub id (both read with `datasets.load_dataset`). This
`datasets` (4 and later) runs no loading scripts: a dataset that is a `<name>.py` script is refused.
CSV files in a local directory are read as `read_table` reads them: only empty fields are missing
("NA" is a text); a Hub dataset's as `load_dataset` reads them, so that its cache serves it offline.

Every problem the user can fix raises `DataError` in one line that starts with the flags naming the
dataset, e.g. `--dataset_name owner/reviews: cannot reach the Hugging Face Hub ...`.
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path

import datasets
from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES
from datasets.packaged_modules.csv.csv import CsvConfig

from finetune.data.tables import DataError

__all__ = ["DEFAULT_SPLIT_NAMES", "dataset_flags", "load_dataset_splits", "load_named_dataset"]

logger = logging.getLogger(__name__)

# "name" or "owner/name": what `load_dataset` looks up on the Hub when no local directory has the name.
HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
# Written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`.
SAVED_MARKERS = ("state.json", "dataset_dict.json")
# The splits `load_data` fills, and the dataset's split each is taken from unless its flag says otherwise.
DEFAULT_SPLIT_NAMES = {"train": "train", "validation": "validation", "test": "test"}
# Only empty fields are missing, as in `read_table`: pandas' defaults would also make "NA" or "null" missing.
CSV_OPTIONS = {"keep_default_na": False, "na_values": [""]}


def dataset_flags(name: str, config_name: str | None) -> str:
    """How messages name a dataset: the flags that chose it."""
    return f"--dataset_name {name}" + (f" --dataset_config_name {config_name}" if config_name else "")


def _one_line(error: BaseException) -> str:
    cause = error.__cause__ if isinstance(error, datasets.exceptions.DatasetGenerationError) else None
    return " ".join(str(cause or error).split()) or type(error).__name__


def _config_names(path: str) -> str:
    try:
        return ", ".join(datasets.get_dataset_config_names(path))
    except Exception:  # listing them is a courtesy: the error below stands without it
        return "?"


def _load_saved(path: Path, flags: str, config_name: str | None) -> datasets.DatasetDict:
    if config_name is not None:
        raise DataError(f"{flags}: a directory written by save_to_disk has no configurations")
    try:
        saved = datasets.load_from_disk(str(path), keep_in_memory=True)
    except Exception as error:  # a damaged directory: missing or unreadable arrow and JSON files
        raise DataError(f"{flags}: cannot read this save_to_disk directory: {_one_line(error)}") from error
    return saved if isinstance(saved, datasets.DatasetDict) else datasets.DatasetDict(train=saved)


def _load_hub(name: str, config_name: str | None) -> datasets.DatasetDict:
    return datasets.load_dataset(name, config_name)


def _load_local(path: str, config_name: str | None) -> datasets.DatasetDict:
    with tempfile.TemporaryDirectory(prefix="finetune-data-") as cache_dir:
        builder = datasets.load_dataset_builder(path, config_name, cache_dir=cache_dir)
        if isinstance(builder.config, CsvConfig):
            builder = datasets.load_dataset_builder(path, config_name, cache_dir=cache_dir, **CSV_OPTIONS)
        builder.download_and_prepare()
        return builder.as_dataset(in_memory=True)


def _translate(error: Exception, flags: str, path: str) -> DataError:
    """The one-line `DataError` for an exception of `datasets.load_dataset_builder` or its download."""
    message = _one_line(error)
    if isinstance(error, ConnectionError):
        # `datasets` drops the network error (`raise ... from None`); huggingface_hub logged it on each retry.
        offline = " (HF_HUB_OFFLINE is set)" if datasets.config.HF_HUB_OFFLINE else ""
        return DataError(
            f"{flags}: cannot reach the Hugging Face Hub at {datasets.config.HF_ENDPOINT}{offline} and the dataset "
            "is not in the cache; load it once online, or give a local directory or --train_file"
        )
    if isinstance(error, datasets.exceptions.DatasetNotFoundError):
        return DataError(f"{flags}: {message} (no such local directory either)")
    if isinstance(error, FileNotFoundError):  # EmptyDatasetError, DataFilesNotFoundError among them
        return DataError(f"{flags}: no data files found (csv, tsv, json, jsonl, parquet, ...): {message}")
    if isinstance(error, RuntimeError) and "scripts are no longer supported" in message:
        script = message.rsplit(" ", 1)[-1]
        return DataError(
            f"{flags}: the dataset is a loading script ({script}), which datasets {datasets.__version__} "
            "no longer runs; use a version of it saved as data files (csv, json, parquet), or --train_file"
        )
    if "Config name is missing" in message:
        return DataError(f"{flags}: give a configuration with --dataset_config_name ({_config_names(path)})")
    if re.search(r"BuilderConfig .* not found", message):
        return DataError(f"{flags}: no such configuration (configurations: {_config_names(path)})")
    if isinstance(error.__cause__ or error, UnicodeDecodeError):
        return DataError(
            f"{flags}: the files are not UTF-8 ({message}); give them with --train_file, --validation_file and "
            "--test_file, whose encoding is detected"
        )
    return DataError(f"{flags}: cannot load the dataset: {message}")


def load_named_dataset(name: str, config_name: str | None = None) -> datasets.DatasetDict:
    """Load every split of a dataset named as `run_classification.py --dataset_name` names it.

    Args:
        name: A directory written by `save_to_disk` (a lone `Dataset` becomes split "train"), a
            local directory of data files (`load_dataset` maps `train.csv`, `dev.jsonl`,
            `test.parquet`, ... onto splits, or follows the `configs:` of its README.md), or a
            Hub id ("owner/name"). Hub datasets go through the Hugging Face cache, so with
            HF_HUB_OFFLINE=1 a dataset loaded once before still loads; local ones are read in
            memory with a throwaway cache.
        config_name: The dataset's configuration (`--dataset_config_name`), where it has several.

    Returns:
        Every split of the dataset, with its columns and features as stored.

    Raises:
        DataError: No such directory or Hub dataset, the Hub is unreachable, the configuration is
            missing or unknown, the dataset is a loading script, or its files cannot be read.
    """
    flags = dataset_flags(name, config_name)
    path = Path(name).expanduser()
    if not path.is_dir():
        if name in _PACKAGED_DATASETS_MODULES:
            raise DataError(
                f"{flags}: '{name}' is one of datasets' file loaders, not a dataset; give the files with "
                "--train_file (and --validation_file, --test_file) or a directory of them"
            )
        if path.is_absolute() or name.startswith(".") or not HUB_ID.match(name):
            raise DataError(f"{flags}: no such directory, nor a Hub dataset id (owner/name)")
    # An absolute path: `load_dataset` would take "csv" for its loader, and "a/b" for a Hub id, before a directory.
    local = str(path.resolve()) if path.is_dir() else None
    try:
        if local is None:
            return _load_hub(name, config_name)
        if any((path / marker).is_file() for marker in SAVED_MARKERS):
            return _load_saved(path, flags, config_name)
        return _load_local(local, config_name)
    except DataError:
        raise
    except Exception as error:  # `datasets` and `huggingface_hub` raise many kinds; each becomes one line
        raise _translate(error, flags, local or name) from error


def load_dataset_splits(
    name: str, config_name: str | None, split_names: dict[str, str]
) -> dict[str, tuple[str, datasets.Dataset, str]]:
    """The splits of a named dataset that fill train / validation / test, each with its name for messages.

    Args:
        name: The dataset (see `load_named_dataset`).
        config_name: Its configuration, or None.
        split_names: For "train", "validation" and "test", the dataset's split to take. A
            validation or test split the dataset lacks is left out (for the caller to cut from
            train) when its name is the default one; a name given otherwise must exist, so that a
            misspelt split is an error rather than a silently smaller train.

    Returns:
        Our split -> (the dataset's split name, that split, and its name in messages, e.g.
        "owner/reviews [dev]").

    Raises:
        DataError: `load_named_dataset`'s errors; a split that must exist does not, e.g.
            `--dataset_name x: no split 'train' (splits: a, b); name it with --train_split_name`.
    """
    dataset, flags = load_named_dataset(name, config_name), dataset_flags(name, config_name)
    label = name if config_name is None else f"{name} ({config_name})"
    chosen = {}
    for split, wanted in split_names.items():
        if wanted in dataset:
            chosen[split] = wanted
        elif split == "train" or wanted != DEFAULT_SPLIT_NAMES[split]:
            raise DataError(
                f"{flags}: no split '{wanted}' (splits: {', '.join(dataset)}); name it with --{split}_split_name"
            )
    unused = [split for split in dataset if split not in chosen.values()]
    if unused and len(chosen) < len(split_names):
        logger.warning(
            "%s: no split %s: cut from train; unused splits: %s (take one with --validation_split_name "
            "or --test_split_name)",
            flags,
            " or ".join(repr(split_names[split]) for split in split_names if split not in chosen),
            ", ".join(unused),
        )
    return {split: (wanted, dataset[wanted], f"{label} [{wanted}]") for split, wanted in chosen.items()}
