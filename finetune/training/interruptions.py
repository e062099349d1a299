"""Stopping a training run on request without losing it: SIGTERM (what `kill`, Slurm and Kubernetes send
before a kill) and Ctrl-C ask the loop to save a checkpoint at the next step boundary and stop, with one
line that gives the command to resume; a second Ctrl-C stops at once.

Under `accelerate launch`, the launcher passes the signal to every process (a terminal's Ctrl-C reaches
them all anyway), possibly at different steps: the processes agree on the step to stop at (one reduction
a step, only when there are several).
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
import threading

import torch

from finetune.errors import Interrupted

logger = logging.getLogger(__name__)

HANDLED = (signal.SIGINT, signal.SIGTERM)


class StopRequests:
    """SIGTERM and SIGINT while the block runs: `requested()` turns true (the loop saves and stops); a second
    Ctrl-C raises KeyboardInterrupt at once. The previous handlers are back after the block.

        with StopRequests() as stop:
            for batch in loader:
                ...
                if stop.requested(accelerator):
                    save_checkpoint(...)
                    raise stop.interrupted(where, checkpoint)
    """

    def __init__(self):
        self.signal_number: int | None = None
        self.previous: dict = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():  # Python handles signals in the main thread
            self.previous = {number: signal.signal(number, self._handle) for number in HANDLED}
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def _handle(self, number, frame) -> None:
        if self.signal_number is not None and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_number = number
        logger.warning(
            "%s: stopping after this step, with a checkpoint (Ctrl-C again: stop at once, without one)",
            signal.Signals(number).name,
        )

    def requested(self, accelerator) -> bool:
        """Whether any process was asked to stop: the same answer on every process."""
        asked = self.signal_number is not None
        if accelerator.num_processes == 1:
            return asked
        flag = torch.tensor([float(asked)], device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum").item() > 0)

    def interrupted(self, step: int, epoch: int, checkpoint) -> Interrupted:
        """The one line the run ends with: where it stopped, what was saved, how to resume."""
        number = self.signal_number or signal.SIGTERM  # another process was signalled: as if this one was
        name = signal.Signals(number).name
        if checkpoint is None:
            saved = "no checkpoint saved (--save_strategy no): a new run starts over"
        else:
            saved = f"checkpoint {checkpoint} saved; resume with: {resume_command()}"
        return Interrupted(f"stopped by {name} at step {step} (epoch {epoch + 1}); {saved}", number)


_command: dict = {}  # the run's command line, as `remember_command` was given it


def remember_command(argv: list[str] | None) -> None:
    """Keeps the run's flags (None: this process's) for the line that says how to resume."""
    _command["argv"] = list(sys.argv[1:] if argv is None else argv)


def resume_command() -> str:
    """The run's command line with `--resume_from_checkpoint latest` (once), as a user would type it:
    `finetune train ...`, or the recipe under `accelerate launch` (or python)."""
    script = sys.argv[0] if sys.argv else ""
    if script.endswith(".py") and "pytest" not in script:
        launcher = "accelerate launch [the same options] " if "ACCELERATE_MIXED_PRECISION" in os.environ else "python "
        program = launcher + script
    else:
        program = "finetune train"
    rest = list(_command.get("argv", sys.argv[1:]))
    if "--resume_from_checkpoint" in rest:
        index = rest.index("--resume_from_checkpoint")
        rest = rest[:index] + rest[index + 2 :]
    rest = [argument for argument in rest if not argument.startswith("--resume_from_checkpoint=")]
    return " ".join([program, *map(shlex.quote, rest), "--resume_from_checkpoint", "latest"])
