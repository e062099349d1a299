"""The lock on a run directory: one process at a time writes into it (`hold_output_dir`), and a lock left
by a killed run is taken over, with the owner (pid, host, start, command) named in every message."""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from finetune.errors import FinetuneError, RunDirectoryError, StorageError, message_of, storage_error
from finetune.training.interruptions import resume_command
from finetune.training.run_directory import LOCK_FILE

logger = logging.getLogger(__name__)


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
