"""Errors a user can fix, and how entry points report them.

Every problem in the user's data, flags, paths or model directories raises a `FinetuneError`
(or a subclass) whose message names the file, line, column or flag at fault. The CLI and the
recipes run their `main` through `report_errors`, which prints that message as one line on
stderr and exits non-zero; the traceback is shown only with `--debug` or `FINETUNE_DEBUG=1`.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys

logger = logging.getLogger(__name__)

EXIT_USER_ERROR = 1
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


def report_errors(program: str):
    """Decorator for a `main(argv=None)`: a `FinetuneError` becomes one line on stderr and exit 1.

    With `--debug` in argv (removed before `main` sees it) or `FINETUNE_DEBUG=1`, the exception
    propagates with its traceback.
    """

    def decorate(main):
        @functools.wraps(main)
        def wrapper(argv=None):
            debug = debug_requested(argv)
            if argv is None:
                sys.argv[1:] = strip_debug_flag(sys.argv[1:])
            else:
                argv = strip_debug_flag(argv)
            try:
                return main(argv)
            except FinetuneError as error:
                if debug:
                    raise
                fail(program, str(error), every_process=isinstance(error, TrainingError))

        return wrapper

    return decorate
