"""Write outputs atomically, readable as normal files are; where caches live.

Each output goes to a temporary name beside its final one and is renamed when complete, so a
reader (or a kill) never sees half a file. Python's temporary files are private (mode 0600,
directories 0700); a serving process running as another user could not read the model, so the
final files get the modes a plain `open()` / `mkdir()` would give: 0666 / 0777 less the umask, or
the mode of the file they replace (a private 0600 output stays private).

A process killed mid-write (SIGKILL, a power cut) leaves its temporary file behind; while a writer
lives, it holds a lock on that file, so `remove_leftover_temporaries` removes only the dead ones.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so no file counts as left over
    fcntl = None


def cache_directory(name: str) -> Path:
    """`$FINETUNE_CACHE/<name>`, else `~/.cache/finetune/<name>`: where finetune keeps what it can remake."""
    root = os.environ.get("FINETUNE_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "finetune") / name


def current_umask() -> int:
    # The only way to read the umask is to set it; set it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def as_if_created(path: str | os.PathLike) -> None:
    """Gives a file or a directory tree made by `tempfile` the modes `open()`/`mkdir()` would."""
    mask = current_umask()
    path = Path(path)
    if path.is_dir():
        os.chmod(path, 0o777 & ~mask)
        for root, dirs, files in os.walk(path):
            for name in dirs:
                os.chmod(Path(root) / name, 0o777 & ~mask)
            for name in files:
                os.chmod(Path(root) / name, 0o666 & ~mask)
    else:
        os.chmod(path, 0o666 & ~mask)


def _give_mode(temporary: str | os.PathLike, path: Path) -> None:
    """The mode of the file `path` where it exists (replacing it keeps its permissions), else `as_if_created`'s."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        as_if_created(temporary)
        return
    os.chmod(temporary, mode)


def _temporary_beside(path: Path) -> tuple[int, str]:
    """A new temporary file beside `path` (`.{name}.XXXXXXXX.tmp`), open and locked while this process lives."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    if fcntl is not None:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # new, so never held elsewhere
    return handle, temporary


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator:
    """Opens a temporary file beside `path`; on success renames it to `path`, else removes it.

    with atomic_write("predictions.csv", encoding="utf-8-sig", newline="") as f:
        f.write(...)

    The new file gets the mode of the one it replaces, else the one `open()` would give.
    """
    path = Path(path)
    handle, temporary = _temporary_beside(path)
    lock = os.dup(handle)  # the lock lasts until the rename, after the file is closed
    try:
        with os.fdopen(handle, mode, **open_kwargs) as file:
            yield file
        _give_mode(temporary, path)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    finally:
        os.close(lock)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file name beside `path` for a writer that takes a name (pandas, gensim); as `atomic_write`."""
    path = Path(path)
    handle, temporary = _temporary_beside(path)
    try:
        yield Path(temporary)
        _give_mode(temporary, path)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    finally:
        os.close(handle)


def remove_leftover_temporaries(path: str | os.PathLike) -> list[Path]:
    """Removes the temporary files `atomic_write` / `atomic_path` left beside `path` in runs that were killed
    (`.{name}.XXXXXXXX.tmp`, unlocked: no live writer holds them); returns those removed.

    Args:
        path: The final file whose earlier temporaries to remove.
    """
    path = Path(path)
    if fcntl is None or not path.parent.is_dir():
        return []
    # mkstemp's names: the prefix, 8 characters of its alphabet, the suffix
    name = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")
    removed = []
    for candidate in sorted(path.parent.iterdir()):
        if not name.fullmatch(candidate.name) or not candidate.is_file() or candidate.is_symlink():
            continue
        with open(candidate, "rb") as file:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a writer that is still running
            candidate.unlink()
        removed.append(candidate)
    return removed


@contextlib.contextmanager
def named_os_errors(path: str | os.PathLike, doing: str) -> Iterator[None]:
    """An OS error in the block (no space, read-only, permission) becomes a `StorageError` naming `path`: the
    writers (Python's `open` at close, safetensors, tokenizers) often raise one without the file's name."""
    from finetune.errors import StorageError, storage_error

    try:
        yield
    except StorageError:
        raise
    except OSError as error:
        raise storage_error(error, getattr(error, "filename", None) or path, doing) from error


def write_text_atomic(text: str, path: str | os.PathLike) -> None:
    """Writes text (UTF-8) to a temporary file beside `path`, then renames it over `path`."""
    with named_os_errors(path, "writing"), atomic_write(path, encoding="utf-8") as file:
        file.write(text)


def _non_finite_key(obj, where: str = "") -> str | None:
    """The first key path holding NaN or infinity, e.g. "history.train[3].loss"."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return where or "(top level)"
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for key, value in items:
        found = _non_finite_key(value, f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}".lstrip("."))
        if found:
            return found
    return None


def to_strict_json(obj, **kwargs) -> str:
    """JSON as every parser reads it: NaN and infinity (which Python would write bare) are refused.

    Raises:
        ValueError: naming the key that holds the non-finite number (a bug upstream: runs that
            diverge stop before writing their results).
    """
    try:
        return json.dumps(obj, ensure_ascii=False, allow_nan=False, **kwargs)
    except ValueError:
        raise ValueError(f"refusing to write NaN/infinity as JSON (at {_non_finite_key(obj)})") from None


def write_json_atomic(obj, path: str | os.PathLike) -> None:
    """Writes strict JSON to a temporary file beside `path`, then renames it over `path`."""
    write_text_atomic(to_strict_json(obj, indent=2), path)


def save_pretrained_atomic(model, tokenizer, directory: str | os.PathLike) -> None:
    """`save_pretrained` into a temporary sibling directory, then swap it in.

    A kill during the save leaves the previous `directory` whole: readers never see half a model.
    """
    directory = Path(directory)
    with named_os_errors(directory, "saving the model"):
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}-"))
        try:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            as_if_created(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        replace_directory(staging, directory)


# A model saved among other files (`save_pretrained_into`): which files are its own, and while a save is being
# moved into place, from where (`staging`) and which files of the previous model it replaces (`previous`).
MODEL_RECORD = ".model_files.json"
MODEL_STAGING = ".model-"  # + mkdtemp's letters: hidden, so never a run's `checkpoint-K` nor a file of the model
RUN_LOCK = ".lock"  # the run's lock file (`run_lock.RunLock`): held while a run may be saving its model


def _model_record(directory: Path) -> dict:
    try:
        record = json.loads((directory / MODEL_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(record, dict) or not all(isinstance(name, str) for name in record.get("files", [None])):
        return {}  # (not written by finetune)
    return record


def saved_model_files(directory: str | os.PathLike) -> list[str]:
    """The names of the files `save_pretrained_into` saved into `directory` ([]: none, or an unreadable record)."""
    return list(_model_record(Path(directory)).get("files", []))


def save_pretrained_into(model, tokenizer, directory: str | os.PathLike) -> None:
    """`save_pretrained` (model and tokenizer) into `directory`, which holds other files too (a run directory
    laid out as transformers' Trainer lays it out: config.yaml, metrics.json, checkpoint-K/ beside the model).
    The previous model's files are replaced (or removed, those the new model lacks); the others are left.

    The model is written into a hidden staging directory inside `directory` first. Once it is complete, the
    record (`MODEL_RECORD`) is renamed into place naming the staging directory, the new files and the previous
    model's: that is the commit point. Then each file is renamed into place, the weights last, the previous
    model's files the new one lacks are removed, and the record is rewritten without the staging directory.
    A kill before the commit point leaves the previous model (and a staging directory the next save removes);
    after it, `finish_model_save` (the next save, the run's resume, the next load) completes the move: the
    directory holds the old model or the new one, never a mix.

    Raises:
        StorageError: A file could not be written; the previous model is left whole.
    """
    directory = Path(directory)
    with named_os_errors(directory, "saving the model"):
        directory.mkdir(parents=True, exist_ok=True)
        previous = finish_model_save(directory)
        staging = Path(tempfile.mkdtemp(dir=directory, prefix=MODEL_STAGING))
        try:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            as_if_created(staging)
            weights_last = sorted(os.listdir(staging), key=lambda name: (name.endswith(".safetensors"), name))
            write_json_atomic({"files": weights_last, "staging": staging.name, "previous": previous},
                              directory / MODEL_RECORD)  # fmt: skip
        except BaseException:
            if _model_record(directory).get("staging") != staging.name:  # not committed (else: finished next time)
                shutil.rmtree(staging, ignore_errors=True)
            raise
        finish_model_save(directory)


def _is_locked(path: Path) -> bool:
    """Whether a live process holds a `flock` on `path`."""
    if fcntl is None:
        return False
    try:
        handle = open(path, "rb")  # noqa: SIM115 (closed below)
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def finish_model_save(directory: str | os.PathLike, *, unless_running: bool = False) -> list[str]:
    """Completes a `save_pretrained_into` that a kill stopped after its commit point (renames the rest of its
    files into place, removes the previous model's files it lacks) and removes staging directories left before
    one; returns the names of the model's files.

    Args:
        directory: The directory the model is saved in.
        unless_running: Leave it to the run that holds `directory`'s lock (`RUN_LOCK`), if one does: a reader's
            call, which must not race the writer.
    """
    directory = Path(directory)
    record = _model_record(directory)
    if unless_running and (not record.get("staging") or _is_locked(directory / RUN_LOCK)):
        return list(record.get("files", []))  # (a reader removes no staging directory: a live save's, maybe)
    if record.get("staging"):
        staging = directory / record["staging"]
        for name in record["files"]:
            if os.path.lexists(staging / name):
                if (directory / name).is_dir() and not (directory / name).is_symlink():
                    shutil.rmtree(directory / name)
                os.replace(staging / name, directory / name)
        for name in sorted(set(record.get("previous", [])) - set(record["files"])):
            stale = directory / name
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        record = {"files": record["files"]}
        write_json_atomic(record, directory / MODEL_RECORD)
    for leftover in directory.glob(f"{MODEL_STAGING}*"):  # emptied by the moves above, or a save killed before
        shutil.rmtree(leftover, ignore_errors=True)
    remove_leftover_temporaries(directory / MODEL_RECORD)  # a record killed mid-write
    return list(record.get("files", []))


@contextlib.contextmanager
def atomic_directory(directory: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling directory to fill; on success it replaces `directory`, else it is removed.

    with atomic_directory("runs/reviews/onnx") as staging:
        write(staging / "model.onnx")
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}-"))
    try:
        yield staging
        as_if_created(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_directory(staging, directory)


def replace_directory(staging: Path, directory: Path) -> None:
    """Swaps a complete `staging` directory in for `directory` (readers see the old one or the new one)."""
    if directory.exists():
        retired = directory.with_name(f".{directory.name}-old")
        shutil.rmtree(retired, ignore_errors=True)
        os.replace(directory, retired)
        os.replace(staging, directory)
        shutil.rmtree(retired)
    else:
        os.replace(staging, directory)
