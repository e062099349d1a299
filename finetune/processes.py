"""`finetune predict` on a CPU with one process per core: each labels pieces of the file with one thread.

A BiLSTM's steps are small matrix products: the model on two threads ran only 1.6x as fast as on one
(378 -> 237 µs a review, batches of 64), while tokenizing (Python, under the GIL) takes one core whatever the thread
count. Processes that each tokenize and run the model on a piece of the rows keep every core busy: on
2 cores, `predict_probabilities` over 20,000 reviews went from 2,950 texts/s (one process, two threads)
to 4,100 in float32 and from 3,830 to 6,550 in bfloat16 (README, "Speed").

The workers are forked from the process that already holds the model, so they start in milliseconds and share
it (copy-on-write). `scores_in_processes` labels a list this process holds: the workers share it too, and only
row numbers go to them; `LabellingProcesses.submit` sends the texts of a file's chunk, so that the file is never
held whole. Forking is Linux's (macOS and Windows spawn, which would load everything again); a model on a GPU
stays in one process.

A worker dies with the process that forked it (`die_with_parent`): killed, even by SIGKILL, that process would
otherwise leave them running (and holding their memory) until their queue's pipe breaks. They ignore Ctrl-C,
which the terminal sends to them too: the parent stops them, and reports it once.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from finetune.errors import ArgumentError, FinetuneError

# The most rows a worker labels at a time (`scores_in_processes` cuts equal pieces up to it): small enough to
# share a file's rows evenly between the processes, large enough that sorting them by length leaves the
# batches almost free of padding (on 20,000 reviews, 2 processes: 512 rows 5,600/s, 1,024 6,100-6,500,
# 2,048 6,550, 4,096 5,400 in bfloat16).
PIECE_ROWS = 2048
MOST_PROCESSES = 16
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

logger = logging.getLogger(__name__)

_worker: dict = {}  # in each worker: what it labels with (set by `_start_worker`)


def can_fork() -> bool:
    return sys.platform == "linux" and "fork" in multiprocessing.get_all_start_methods()


def cpu_cores() -> int:
    """The cores to label with: PyTorch's thread count (the physical cores, or what OMP_NUM_THREADS or
    `torch.set_num_threads` says), within this process's CPU affinity (`taskset`, a container's limit)."""
    import torch

    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(torch.get_num_threads(), allowed))


def choose_num_proc(
    num_proc: int | None, row_count: int, on_cpu: bool, several_launched: bool, name: str = "--num_proc"
) -> int:
    """The processes that label `row_count` rows: `num_proc` as given (checked; errors call it `name`: the
    command's flag, or a Python argument), or for None one per core where that pays (a CPU model, Linux, not
    under `accelerate launch`, at least two pieces of rows)."""
    if num_proc is not None:
        if num_proc < 1:
            raise ArgumentError(f"{name} must be a positive integer, got {num_proc}")
        if num_proc > 1:
            if several_launched:
                raise ArgumentError(f"{name}: under `accelerate launch` each launched process labels its share")
            if not on_cpu:
                raise ArgumentError(f"{name} runs CPU processes; the model is on a GPU: drop {name}")
            if not can_fork():
                raise ArgumentError(f"{name} needs Linux's fork (this is {sys.platform}): drop {name}")
        return num_proc
    if several_launched or not on_cpu or not can_fork():
        return 1
    return max(1, min(cpu_cores(), MOST_PROCESSES, row_count // PIECE_ROWS))


def die_with_parent(parent: int) -> None:
    """Has Linux SIGKILL this process when its parent (the thread that forked it) ends (`PR_SET_PDEATHSIG`);
    exits now if that already happened (the signal then never comes). Elsewhere, nothing.

    Args:
        parent: The pid of the process that forked this one, taken before the fork.
    """
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        logger.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    if os.getppid() != parent:
        os._exit(1)


def _start_worker(score: Callable, texts_of: Callable | None, threads: int, parent: int) -> None:
    import torch

    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent stops us
    torch.set_num_threads(threads)
    _worker.update(score=score, texts_of=texts_of)


def _score_piece(start: int, stop: int) -> np.ndarray:
    return _worker["score"](_worker["texts_of"](start, stop), None)


def _score_texts(texts: list[str]) -> np.ndarray:
    return _worker["score"](texts, None)


def piece_bounds(row_count: int, num_proc: int, piece_rows: int) -> list[int]:
    """Where the pieces of `row_count` rows start, and the last one ends: pieces of at most `piece_rows`, as
    many as make whole rounds of the processes and of equal size, so that the processes end together (17,360
    rows, 2 processes: 10 pieces of 1,736, not 8 of 2,048 and one of 976 that one process labels while the
    other waits)."""
    rounds = -(-row_count // (piece_rows * num_proc))
    pieces = min(rounds * num_proc, row_count)
    return [row_count * piece // pieces for piece in range(pieces + 1)] if pieces else [0]


class LabellingProcesses:
    """`num_proc` forked processes of one thread each that run `score(texts, None)` on pieces of texts; a block:

        with LabellingProcesses(score, 2) as processes:
            job = processes.submit(texts)   # cut into pieces, queued
            scores = job()                  # waits: the scores of `texts`, in their order

    Leaving the block waits for the workers to end; leaving it on an error (Ctrl-C, SIGTERM, a failed write)
    stops them at once.

    Args:
        score: `score(texts, progress)` -> one row of scores per text; run in the workers, forked with it.
        num_proc: The processes.
        piece_rows: The most texts a process labels at a time.
        name: The setting to name in errors: `--num_proc` (a flag) or `num_proc` (a Python argument).
        texts_of: `texts_of(start, stop)`, the texts of rows start..stop-1 of a list the workers share
            (`submit_rows`); None where the texts are sent (`submit`).
    """

    def __init__(self, score: Callable, num_proc: int, piece_rows: int = PIECE_ROWS, name: str = "--num_proc",
                 texts_of: Callable | None = None):  # fmt: skip
        self.num_proc, self.piece_rows, self.name = num_proc, piece_rows, name
        self.threads = max(1, cpu_cores() // num_proc)
        self.pool = ProcessPoolExecutor(
            num_proc,
            multiprocessing.get_context("fork"),
            initializer=_start_worker,
            initargs=(score, texts_of, self.threads, os.getpid()),
        )
        self.started = False

    def __enter__(self) -> LabellingProcesses:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.pool.shutdown()
            return
        # Stopped: the pieces not started are dropped, and the ones running are not waited for
        workers = list((getattr(self.pool, "_processes", None) or {}).values())
        manager = getattr(self.pool, "_executor_manager_thread", None)
        self.pool.shutdown(wait=False, cancel_futures=True)
        for worker in workers:
            worker.kill()
        for worker in workers:
            worker.join(5)
        # The pool's manager thread sees its workers gone and closes its wake-up pipe: wait for that here, or at
        # exit the interpreter may wake it through the pipe while it closes (CPython 3.11's race), which prints a
        # traceback ("OSError: [Errno 9] Bad file descriptor") after the run's one line
        if manager is not None:
            manager.join(5)

    def _submit(self, function: Callable, *args) -> Future:
        if self.started:
            return self.pool.submit(function, *args)
        # The workers fork at the first submission. Frozen, this process's objects are left out of their garbage
        # collections, which would otherwise write to (and so copy) every page of them: the Python docs' advice
        # for fork without exec.
        gc.freeze()
        try:
            future = self.pool.submit(function, *args)
        finally:
            gc.unfreeze()
        self.started = True
        return future

    def submit(self, texts: list[str]) -> Callable[[], np.ndarray]:
        """Queues `texts` (at least one), cut into pieces; returns `job()`, which waits for their scores (in their
        order).

        Raises:
            FinetuneError: (from `job()`) a worker died (killed, out of memory); the message says how to run
                in one process.
        """
        bounds = piece_bounds(len(texts), self.num_proc, self.piece_rows)
        futures = [self._submit(_score_texts, texts[start:stop]) for start, stop in zip(bounds, bounds[1:])]
        return lambda: np.concatenate([self.result(future) for future in futures])

    def submit_rows(self, start: int, stop: int) -> Future:
        """Queues rows start..stop-1 of the shared list (`texts_of`); `result(future)` waits for their scores."""
        return self._submit(_score_piece, start, stop)

    def result(self, future: Future) -> np.ndarray:
        """The scores of a piece, once labelled.

        Raises:
            FinetuneError: A worker died (killed, out of memory); the message says how to run in one process.
        """
        try:
            return future.result()
        except BrokenProcessPool:
            raise FinetuneError(
                f"a labelling process of {_setting(self.name, self.num_proc)} died (killed, or out of memory?); "
                f"run again with {_setting(self.name, 1)}, or fewer processes"
            ) from None


def scores_in_processes(
    score: Callable,
    texts_of: Callable,
    row_count: int,
    num_proc: int,
    piece_rows: int = PIECE_ROWS,
    name: str = "--num_proc",
) -> Iterator[tuple[int, np.ndarray]]:
    """`score(texts, progress)` over rows 0..row_count-1 of a list the workers share, `piece_rows` at a time in
    `num_proc` forked processes of one thread each (`texts_of(start, stop)` gives the texts); yields (rows,
    scores) in row order.

    Raises:
        FinetuneError: A worker died (killed, out of memory); the message says how to run in one process.
    """
    bounds = piece_bounds(row_count, num_proc, piece_rows)
    with LabellingProcesses(score, num_proc, piece_rows, name, texts_of) as processes:
        logger.info(
            "Labelling %d rows in %d processes of %d thread(s), %d pieces of up to %d rows",
            row_count, num_proc, processes.threads, len(bounds) - 1, -(-row_count // max(len(bounds) - 1, 1)),
        )  # fmt: skip
        futures = [processes.submit_rows(start, stop) for start, stop in zip(bounds, bounds[1:])]
        for start, stop, future in zip(bounds, bounds[1:], futures):
            yield stop - start, processes.result(future)


def _setting(name: str, value: int) -> str:
    """`--num_proc 2` for a flag, `num_proc=2` for a Python argument."""
    return f"{name} {value}" if name.startswith("--") else f"{name}={value}"
