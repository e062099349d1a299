"""Errors a user can fix, and how entry points report them.

Every problem in the user's data, flags, paths or model directories raises a `FinetuneError`
(or a subclass) whose message names the file, line, column or flag at fault. The CLI and the
recipes run their `main` through `report_errors`, which prints that message as one line on
stderr and exits non-zero; the traceback is shown only with `--debug` or `FINETUNE_DEBUG=1`.
"""

from __future__ import annotations

import contextlib
import errno
import faulthandler
import functools
import logging
import os
import re
import shutil
import signal
import sys
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

EXIT_USER_ERROR = 1
EXIT_INTERRUPTED = 130  # as a shell reports a command stopped by Ctrl-C (128 + SIGINT)
DEBUG_FLAG = "--debug"
DEBUG_ENV = "FINETUNE_DEBUG"
DEBUG_HELP = f"On an error, show its traceback rather than one line (or set {DEBUG_ENV}=1)."
# Hugging Face tokens (hf_...), and the value of any flag whose name says it holds a secret.
_SECRET = re.compile(r"\bhf_[A-Za-z0-9]{6,}")
_SECRET_FLAG = re.compile(r"(--?[\w-]*(?:token|secret|password|api_key)[\w-]*)(=|\s+)(?![(\-])(\S+)", re.IGNORECASE)


class FinetuneError(Exception):
    """A problem the user can fix; the message says where (file and line, column, or flag)."""


class ArgumentError(FinetuneError, ValueError):
    """A flag or config value is wrong; the message names the flag."""


class RunDirectoryError(FinetuneError):
    """The output directory holds another run, or a checkpoint belongs to another run."""


class TrainingError(FinetuneError):
    """Training went wrong in a way the user can fix (e.g. the loss became NaN)."""


class ModelDirectoryError(FinetuneError, OSError):
    """A saved model directory is missing, incomplete or damaged; the message names the file."""


class StorageError(FinetuneError, OSError):
    """Writing or reading a path failed in the operating system (no space, read-only, permission): the
    message names the path and what to do (`storage_error`)."""


class Interrupted(BaseException):
    """The run was stopped by a signal (Ctrl-C, SIGTERM); the message says how to go on. Exits with 128 + the
    signal's number, as a shell reports a command a signal stopped (130 for Ctrl-C, 143 for SIGTERM).

    A `BaseException`, as `KeyboardInterrupt` is: raised by the SIGTERM handler wherever the program is, it must
    not be taken for a failure by an `except Exception` on its way up (and the program then go on, or end 0)."""

    def __init__(self, message: str, signal_number: int = 2):
        super().__init__(message)
        self.exit_code = 128 + signal_number


# What to do about each kind of failure; {path} is the path named, {free} the space left on its disk.
_ADVICE = {
    errno.ENOSPC: "no space left on the disk ({free} free); free some, or write elsewhere",
    errno.EDQUOT: "over the disk quota ({free} free); free some, or write elsewhere",
    errno.EROFS: "the file system is read-only; write elsewhere",
    errno.EACCES: "permission denied; write where you may, or change the permissions",
    errno.EPERM: "permission denied; write where you may, or change the permissions",
    errno.ENOENT: "no such file or directory",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EISDIR: "is a directory, not a file",
    errno.EEXIST: "already exists",
    errno.EIO: "input/output error (a failing disk or a network file system?)",
}


def _free_space(path: Path) -> str:
    for parent in (path, *path.parents):
        try:
            return f"{shutil.disk_usage(parent).free / 1e6:,.0f} MB"
        except OSError:
            continue
    return "unknown"


def storage_error(error: BaseException, path: str | os.PathLike | None = None, doing: str = "") -> StorageError:
    """A `StorageError` for an OS failure: "PATH: <what happened>; <what to do>" (`doing`: e.g. "saving the
    checkpoint", put first). `path`: the path to name where the error does not (torch's writers raise
    `RuntimeError`s that name neither the path nor the cause: a disk with under 1 MB left is then reported full)."""
    number = getattr(error, "errno", None)
    path = Path(path if path is not None else getattr(error, "filename", None) or ".")
    if number is None:  # e.g. torch's "basic_ios::clear: iostream error": find the likely cause
        free = shutil.disk_usage(next((p for p in (path, *path.parents) if p.exists()), Path("."))).free
        if free < (1 << 20):
            number = errno.ENOSPC
        elif not os.access(next((p for p in (path, *path.parents) if p.exists()), Path(".")), os.W_OK):
            number = errno.EACCES
    advice = _ADVICE.get(number)
    if advice is None:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        unknown = f"{reason}; check that its disk has space ({{free}} free) and is writable"
        advice = reason if number is not None else unknown
    message = f"{path}: {doing + ': ' if doing else ''}{advice.format(free=_free_space(path))}"
    return StorageError(number or 0, message)


def redact(text: str) -> str:
    """Hides secrets (Hugging Face tokens, values of `--*token*` flags) in a message."""
    text = _SECRET_FLAG.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
    return _SECRET.sub("hf_***", text)


def debug_requested(argv: list[str] | None = None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes")


def strip_debug_flag(argv: list[str] | None) -> list[str] | None:
    return None if argv is None else [arg for arg in argv if arg != DEBUG_FLAG]


def fail(program: str, message: str, *, every_process: bool = False) -> None:
    """Prints `program: error: message` (secrets hidden) and exits with `EXIT_USER_ERROR`.

    In a run of several processes every one of them meets the same bad input: only the first
    says so, unless `every_process` (a problem that may be one process's own, like a diverged loss).
    """
    rank = os.environ.get("RANK", "0")
    if rank == "0" or every_process:
        prefix = "" if rank == "0" else f"[process {rank}] "
        print(f"{program}: error: {prefix}{redact(message)}", file=sys.stderr)
    raise SystemExit(EXIT_USER_ERROR)


def _raise_interrupted(signal_number, frame) -> None:
    raise Interrupted("stopped by SIGTERM", signal_number)


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM (what `kill`, schedulers and Kubernetes send first) unwinds like Ctrl-C while the block runs:
    temporary files are removed and locks released on the way out, rather than the process vanishing
    mid-write. The training loop sets its own handler, which stops at the next step after a checkpoint."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def message_of(error: FinetuneError) -> str:
    """The one line of a `FinetuneError` (a `StorageError`'s text, not OSError's "[Errno 28] ...")."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)


# gloo's and NCCL's words for a collective that waited past the process group's timeout (--ddp_timeout)
_COLLECTIVE_TIMEOUT = re.compile(
    r"Timed out waiting (\d+)ms|Watchdog caught collective operation timeout", re.IGNORECASE
)


def collective_timeout(error: BaseException) -> str | None:
    """The one line for a process that waited past `--ddp_timeout` for the others, or None."""
    found = _COLLECTIVE_TIMEOUT.search(str(error))
    if not isinstance(error, RuntimeError) or found is None or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return None
    waited = f" {int(found.group(1)) / 1000:g} s" if found.group(1) else ""
    return (
        f"waited{waited} for the other processes at a synchronisation (--ddp_timeout): one of them is stuck or "
        "died; `kill -USR1 PID` prints where a process waits, --debug the traceback"
    )


def _say(program: str, message: str) -> None:
    if os.environ.get("RANK", "0") == "0":
        print(f"{program}: {redact(message)}", file=sys.stderr)


def report_errors(program: str):
    """Decorator for a `main(argv=None)`: a `FinetuneError` becomes one line on stderr and exit 1.

    With `--debug` in argv (removed before `main` sees it) or `FINETUNE_DEBUG=1`, the exception
    propagates with its traceback. While `main` runs, `kill -USR1 PID` prints every thread's stack to
    stderr and the program goes on: where a stuck process (of a distributed run, say) waits.
    """

    def decorate(main):
        @functools.wraps(main)
        def wrapper(argv=None):
            debug = debug_requested(argv)
            if threading.current_thread() is threading.main_thread() and sys.__stderr__ is not None:
                with contextlib.suppress(OSError, ValueError):  # a stderr with no file descriptor: no stacks
                    faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)
            with _terminate_as_interrupt():
                return _run(main, argv, debug)

        def _run(main, argv, debug):
            if argv is None:
                sys.argv[1:] = strip_debug_flag(sys.argv[1:])
            else:
                argv = strip_debug_flag(argv)
            try:
                return main(argv)
            except Interrupted as error:
                if debug:
                    raise
                _say(program, str(error))
                raise SystemExit(error.exit_code) from None
            except FinetuneError as error:
                if debug:
                    raise
                fail(program, message_of(error), every_process=isinstance(error, TrainingError))
            except KeyboardInterrupt:
                if debug:
                    raise
                _say(program, "interrupted (Ctrl-C)")
                raise SystemExit(EXIT_INTERRUPTED) from None
            except OSError as error:  # our own code turns the ones it expects into StorageErrors
                if debug:
                    raise
                fail(program, message_of(storage_error(error)), every_process=True)
            except RuntimeError as error:
                message = collective_timeout(error)
                if debug or message is None:
                    raise
                fail(program, message, every_process=True)

        return wrapper

    return decorate
