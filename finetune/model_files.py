"""Check a saved model directory before loading it, so that a missing or damaged file is named.

Loading a broken directory fails deep inside transformers: a `TypeError ... NoneType` from the
tokenizer when `vocab.txt` is gone, "Repo id must be in the form ..." for a mistyped path, a
safetensors header error that names no file. `check_model_directory` says which file is missing
or damaged instead, reading only headers, so it costs milliseconds before a load of seconds:

    model_dir = resolve_model_directory("runs/reviews")  # a run directory of the earlier layout: its best/
    check_model_directory(model_dir)
    classifier = pipeline("text-classification", model=model_dir)
    check_finite_weights(classifier.model)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import zipfile
from pathlib import Path

from finetune.errors import ModelDirectoryError
from finetune.files import MODEL_RECORD, finish_model_save

logger = logging.getLogger(__name__)

CONFIG_FILES = ("config.json", "adapter_config.json")
WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin")
SHARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# Any one of these lets AutoTokenizer build a tokenizer (tokenizer_config.json names the class,
# whose own files it then asks for); JiebaTokenizer is checked more closely.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")
# Where runs of earlier versions saved their model (OUTPUT_DIR/best/, checkpoints in OUTPUT_DIR/checkpoints/step-K);
# a run directory holds its settings in config.yaml (`run_directory.CONFIG_FILE`)
EARLIER_LAYOUT_MODEL, RUN_SETTINGS = "best", "config.yaml"


def is_hub_id(name: str) -> bool:
    """Whether `name` could be a Hub repo id (`user/model`, `model`) rather than a mistyped path."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if name.startswith((".", "/", "~")) or name.endswith(("/", os.sep)):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _read_json(file: Path) -> dict:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelDirectoryError(f"{file} is damaged: not a JSON file ({err})") from None
    if not isinstance(data, dict):
        raise ModelDirectoryError(f"{file} is damaged: not a JSON object")
    return data


def _check_safetensors(file: Path) -> None:
    """Compares the file's size with the end of the last tensor its header lists, then lets
    safetensors validate the header; reads the header only (a few KB), never the tensors."""
    from safetensors import safe_open

    size = file.stat().st_size
    problem = None
    with open(file, "rb") as stream:
        header_bytes = int.from_bytes(stream.read(8), "little")
        if size < 8 or header_bytes > size - 8:
            problem = f"{size:,} bytes, too few for its header"
        else:
            try:
                header = json.loads(stream.read(header_bytes))
                end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
            except (ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
                problem = f"unreadable header: {err}"
            else:
                if 8 + header_bytes + end != size:
                    problem = f"{size:,} bytes where its header promises {8 + header_bytes + end:,}"
    if problem is None:
        try:
            with safe_open(file, framework="numpy"):
                pass
        except Exception as err:  # safetensors raises its own SafetensorError (not exported by every version)
            problem = str(err)
    if problem:
        raise ModelDirectoryError(f"{file} is damaged or truncated ({problem})")


def _check_weight_file(file: Path) -> None:
    if file.suffix == ".safetensors":
        _check_safetensors(file)
        return
    with open(file, "rb") as stream:
        legacy_pickle = stream.read(1) == b"\x80"  # torch.save before PyTorch 1.6: a bare pickle
    # torch.save writes a zip archive, whose directory sits at the end: a cut-off file has none.
    if not legacy_pickle and not zipfile.is_zipfile(file):
        raise ModelDirectoryError(f"{file} is damaged or truncated (not a complete PyTorch zip archive)")


def _check_weights(directory: Path) -> None:
    for index_name in SHARD_INDEXES:
        if (directory / index_name).is_file():
            weight_map = _read_json(directory / index_name).get("weight_map", {})
            for shard in sorted(set(weight_map.values())):
                if not (directory / shard).is_file():
                    raise ModelDirectoryError(f"{directory / shard}: no such file, though {index_name} lists it")
                _check_weight_file(directory / shard)
            return
    present = [directory / name for name in WEIGHT_FILES if (directory / name).is_file()]
    if not present:
        raise ModelDirectoryError(
            f"{directory}: no weights file ({', '.join(WEIGHT_FILES)}): the model was not saved completely"
        )
    for file in present:
        _check_weight_file(file)


def _check_tokenizer(directory: Path, config: dict) -> None:
    tokenizer_file = directory / "tokenizer_config.json"
    tokenizer_config = _read_json(tokenizer_file) if tokenizer_file.is_file() else {}
    # Without tokenizer_config.json, AutoTokenizer picks the class registered for the model type.
    jieba = tokenizer_config.get("tokenizer_class") == "JiebaTokenizer" or (
        not tokenizer_config
        and config.get("model_type") == "bilstm_attention"
        and config.get("encoder_type", "word_vectors") == "word_vectors"
    )
    if jieba:
        needed = {"vocab.txt": "its vocabulary"}
        if tokenizer_config.get("user_dict_required"):
            needed["user_dict.txt"] = "the segmenter's user dictionary it was trained with"
        for name, what in needed.items():
            if not (directory / name).is_file():
                raise ModelDirectoryError(f"{directory}: no {name} ({what}): the JiebaTokenizer cannot be loaded")
    elif not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise ModelDirectoryError(
            f"{directory}: no tokenizer files ({', '.join(TOKENIZER_FILES[:-1])} or {TOKENIZER_FILES[-1]}): "
            "save the tokenizer with the model"
        )


def _holds_model(directory: Path) -> bool:
    return any((directory / name).is_file() for name in CONFIG_FILES)


def resolve_model_directory(path: str | os.PathLike) -> str | os.PathLike:
    """The model directory `path` names: `path` itself (a run directory holds its model, as transformers'
    Trainer saves it), or for a run directory of the earlier layout (no config.json, the model in `best/`)
    its `best/`, with an INFO line. A save into it that a killed run left half moved is completed first
    (`files.finish_model_save`; not while the run lives). A Hub id or a missing path is returned as given.

    Raises:
        ModelDirectoryError: A half-moved save that cannot be completed here (a read-only directory).
    """
    directory = Path(path)
    if not directory.is_dir():
        return path
    earlier = directory / EARLIER_LAYOUT_MODEL
    if not _holds_model(directory) and _holds_model(earlier):
        logger.info("%s: a run directory of the earlier layout; loading the model in %s", path, earlier)
        return earlier if isinstance(path, Path) else str(earlier)
    if (directory / MODEL_RECORD).is_file():
        try:
            finish_model_save(directory, unless_running=True)
        except OSError as error:
            raise ModelDirectoryError(
                f"{path}: the run was stopped while saving its model, and the save cannot be finished here "
                f"({error.strerror or error}); resume the run with --resume_from_checkpoint latest"
            ) from error
    return path


def run_directory_of(model_dir: str | os.PathLike) -> Path:
    """The run directory a saved model belongs to (its config.yaml, metrics.json, pictures): the model directory
    itself, or the parent of an earlier layout's `OUTPUT_DIR/best/`."""
    model_dir = Path(model_dir)
    if model_dir.name == EARLIER_LAYOUT_MODEL and (model_dir.parent / RUN_SETTINGS).is_file():
        return model_dir.parent if not (model_dir / RUN_SETTINGS).is_file() else model_dir
    return model_dir


def check_model_directory(path: str | os.PathLike) -> None:
    """Checks that a saved model directory holds a config, undamaged weights and its tokenizer.

    A name that is no local path but could be a Hub repo id (`user/model`) is left to
    transformers. Only headers are read: the check takes milliseconds.

    Args:
        path: A model directory (a run's OUTPUT_DIR, a LoRA adapter's included) or a Hub repo id.

    Raises:
        ModelDirectoryError: The directory does not exist, or lacks its config, weights or
            tokenizer files, or a weights file is damaged or truncated; the message names it.
    """
    directory = Path(path)
    if not directory.exists():
        if is_hub_id(str(path)):
            return
        raise ModelDirectoryError(f"{path}: no such model directory")
    if not directory.is_dir():
        raise ModelDirectoryError(f"{path}: not a directory; give the model directory (a run's OUTPUT_DIR)")
    config_file = next((directory / name for name in CONFIG_FILES if (directory / name).is_file()), None)
    if config_file is None:
        earlier = directory / EARLIER_LAYOUT_MODEL
        hint = earlier if _holds_model(earlier) else "a run's OUTPUT_DIR"
        raise ModelDirectoryError(f"{path}: no config.json: not a saved model (give {hint})")
    config = _read_json(config_file)
    _check_weights(directory)
    if config_file.name == "config.json":
        _check_tokenizer(directory, config)
        return
    # A LoRA adapter alone: pipeline() loads the config and tokenizer from the base model it names.
    base = config.get("base_model_name_or_path")
    if not base or (not Path(base).exists() and not is_hub_id(str(base))):
        raise ModelDirectoryError(f"{config_file}: base model {base}: no such model directory")
    if Path(base).exists() and Path(base).resolve() != directory.resolve():
        check_model_directory(base)


def check_finite_weights(model, path: str | os.PathLike | None = None) -> None:
    """Checks that no weight is NaN or infinite: such a model answers NaN scores for every text.

    Args:
        model: A loaded `torch.nn.Module`.
        path: Where it was loaded from, for the message; default: `model.name_or_path`.

    Raises:
        ModelDirectoryError: A weight holds NaN or inf; the message names the first such tensor.
    """
    import torch

    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                where = path or getattr(model, "name_or_path", "") or type(model).__name__
                raise ModelDirectoryError(
                    f"{where}: the weights hold NaN or inf values (the run that saved it diverged); first in {name}"
                )


@contextlib.contextmanager
def hub_errors(name: str | os.PathLike):
    """Turns transformers' failure to fetch a Hub id (offline, no such repository, gated) into one
    `ModelDirectoryError` line; a local directory's errors pass through (it was checked already)."""
    try:
        yield
    except OSError as error:
        if isinstance(error, ModelDirectoryError) or Path(name).exists():
            raise
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelDirectoryError(
            f"{name}: no such directory here, and it could not be loaded from the Hugging Face Hub ({reason})"
        ) from error
