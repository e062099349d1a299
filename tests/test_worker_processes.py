"""Labelling in forked processes (`finetune.processes`): pieces come back in row order from
processes other than this one, each of one thread; a dying worker is one clear error; the default
takes one process per core only where that pays."""

import os
import time

import numpy as np
import pytest
import torch

from finetune import processes as worker_processes
from finetune.errors import ArgumentError, FinetuneError
from finetune.processes import choose_num_proc, scores_in_processes

pytestmark = pytest.mark.skipif(not worker_processes.can_fork(), reason="forked workers are Linux's")


def texts_of(start, stop):
    return [str(row) for row in range(start, stop)]


def row_pid_threads(texts, progress):
    time.sleep(0.02)  # long enough that both workers take pieces
    return np.array([[int(text), os.getpid(), torch.get_num_threads()] for text in texts], dtype=np.int64)


def test_pieces_come_back_in_row_order_from_other_processes(monkeypatch):
    monkeypatch.setattr(worker_processes, "cpu_cores", lambda: 4)
    pieces = list(scores_in_processes(row_pid_threads, texts_of, 1000, 2, piece_rows=64))
    # 16 pieces of 62-63 rows (at most 64, a whole number of rounds of the 2 processes), not 15 of 64 and one of 40
    assert [rows for rows, _ in pieces] == [62, 63] * 8
    scores = np.concatenate([piece for _, piece in pieces])
    assert scores[:, 0].tolist() == list(range(1000))
    pids = set(scores[:, 1].tolist())
    assert len(pids) == 2 and os.getpid() not in pids
    assert set(scores[:, 2].tolist()) == {2}  # 4 cores, 2 processes: 2 threads each


def test_a_worker_error_reaches_the_caller():
    def failing(texts, progress):
        if "300" in texts:
            raise ValueError("row 300 is bad")
        return np.zeros((len(texts), 1))

    with pytest.raises(ValueError, match="row 300 is bad"):
        list(scores_in_processes(failing, texts_of, 1000, 2, piece_rows=100))


def test_a_dying_worker_is_one_clear_error():
    def dying(texts, progress):
        if "300" in texts:
            os._exit(3)  # as the kernel's OOM killer would leave it
        return np.zeros((len(texts), 1))

    with pytest.raises(FinetuneError, match=r"^a labelling process of --num_proc 2 died .*--num_proc 1"):
        list(scores_in_processes(dying, texts_of, 1000, 2, piece_rows=100))
    # called from Python (the batched pipeline), the argument as Python spells it
    with pytest.raises(FinetuneError, match=r"^a labelling process of num_proc=2 died .*with num_proc=1,"):
        list(scores_in_processes(dying, texts_of, 1000, 2, piece_rows=100, name="num_proc"))


def test_the_default_is_a_process_per_core_where_it_pays(monkeypatch):
    monkeypatch.setattr(worker_processes, "cpu_cores", lambda: 4)
    assert choose_num_proc(None, 100, on_cpu=True, several_launched=False) == 1  # less than two pieces
    assert choose_num_proc(None, 5000, on_cpu=True, several_launched=False) == 2
    assert choose_num_proc(None, 1_000_000, on_cpu=True, several_launched=False) == 4
    assert choose_num_proc(None, 1_000_000, on_cpu=False, several_launched=False) == 1  # a GPU model
    assert choose_num_proc(None, 1_000_000, on_cpu=True, several_launched=True) == 1  # accelerate launch shares
    assert choose_num_proc(3, 100, on_cpu=True, several_launched=False) == 3  # as asked
    monkeypatch.setattr(worker_processes, "can_fork", lambda: False)
    assert choose_num_proc(None, 1_000_000, on_cpu=True, several_launched=False) == 1


@pytest.mark.parametrize(
    "num_proc, on_cpu, several, message",
    [
        (0, True, False, "--num_proc must be a positive integer, got 0"),
        (2, False, False, "--num_proc runs CPU processes; the model is on a GPU"),
        (2, True, True, "--num_proc: under `accelerate launch` each launched process labels its share"),
    ],
)
def test_num_proc_that_cannot_run_is_refused(num_proc, on_cpu, several, message):
    with pytest.raises(ArgumentError, match="^" + message.replace("(", r"\(")):
        choose_num_proc(num_proc, 10_000, on_cpu=on_cpu, several_launched=several)
