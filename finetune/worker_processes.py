"""`finetune predict` on a CPU with one process per core: each labels pieces of the file with one thread.

A BiLSTM's steps are small matrix products: the model on two threads ran only 1.6x as fast as on one
(378 -> 237 µs a review, batches of 64), while tokenizing (Python, under the GIL) takes one core whatever the thread
count. Processes that each tokenize and run the model on a piece of the rows keep every core busy: on
2 cores, `predict_probabilities` over 20,000 reviews went from 2,950 texts/s (one process, two threads)
to 4,100 in float32 and from 3,830 to 6,550 in bfloat16 (README, "Speed").

The workers are forked from the process that already holds the model and the table, so they start
in milliseconds and share both (copy-on-write); only row numbers go to them and scores come back.
Forking is Linux's (macOS and Windows spawn, which would load everything again); a model on a GPU
stays in one process.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from .errors import ArgumentError, FinetuneError

# The most rows a worker labels at a time (`scores_in_processes` cuts equal pieces up to it): small enough to
# share a file's rows evenly between the processes, large enough that sorting them by length leaves the
# batches almost free of padding (on 20,000 reviews, 2 processes: 512 rows 5,600/s, 1,024 6,100-6,500,
# 2,048 6,550, 4,096 5,400 in bfloat16).
PIECE_ROWS = 2048
MOST_PROCESSES = 16

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


def _start_worker(score: Callable, texts_of: Callable, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    _worker.update(score=score, texts_of=texts_of)


def _score_piece(start: int, stop: int) -> np.ndarray:
    return _worker["score"](_worker["texts_of"](start, stop), None)


def scores_in_processes(
    score: Callable,
    texts_of: Callable,
    row_count: int,
    num_proc: int,
    piece_rows: int = PIECE_ROWS,
    name: str = "--num_proc",
) -> Iterator[tuple[int, np.ndarray]]:
    """`score(texts, progress)` over rows 0..row_count-1, `piece_rows` at a time in `num_proc` forked
    processes of one thread each (`texts_of(start, stop)` gives the texts); yields (rows, scores) in row order.

    Raises:
        FinetuneError: A worker died (killed, out of memory); the message says how to run in one process.
    """
    # Pieces of at most `piece_rows`, as many as make whole rounds of the processes and of equal size, so that
    # the processes end together (17,360 rows, 2 processes: 10 pieces of 1,736, not 8 of 2,048 and one of 976
    # that one process labels while the other waits)
    rounds = -(-row_count // (piece_rows * num_proc))
    pieces = min(rounds * num_proc, row_count)
    bounds = [row_count * piece // pieces for piece in range(pieces + 1)] if pieces else [0]
    starts, stops = bounds[:-1], bounds[1:]
    threads = max(1, cpu_cores() // num_proc)
    logger.info(
        "Labelling %d rows in %d processes of %d thread(s), %d pieces of up to %d rows",
        row_count, num_proc, threads, pieces, -(-row_count // max(pieces, 1)),
    )  # fmt: skip
    pool = ProcessPoolExecutor(
        num_proc, multiprocessing.get_context("fork"), initializer=_start_worker, initargs=(score, texts_of, threads)
    )
    try:
        # The workers fork at the first piece's submission (all submitted here). Frozen, this process's objects
        # are left out of their garbage collections, which would otherwise write to (and so copy) every page
        # of them: the Python docs' advice for fork without exec.
        gc.freeze()
        try:
            results = pool.map(_score_piece, starts, stops)
        finally:
            gc.unfreeze()
        for start, stop, scores in zip(starts, stops, results):
            yield stop - start, scores
    except BrokenProcessPool:
        raise FinetuneError(
            f"a labelling process of {_setting(name, num_proc)} died (killed, or out of memory?); "
            f"run again with {_setting(name, 1)}, or fewer processes"
        ) from None
    finally:
        pool.shutdown(cancel_futures=True)  # on an error or Ctrl-C, the pieces not started are dropped


def _setting(name: str, value: int) -> str:
    """`--num_proc 2` for a flag, `num_proc=2` for a Python argument."""
    return f"{name} {value}" if name.startswith("--") else f"{name}={value}"
