"""How `scripts/bench_speed.py` measures: peak memory, median throughput over repeats, single-text latency.

The process's peak resident memory is sampled every 5 ms by a thread while a phase runs (and its rise
over the phase's start); a throughput is the median of repeated runs; latency is p50/p95 of single-text
calls after a first pass over the same texts. Its own module so that each phase of the benchmark reads as what it runs.
"""

import contextlib
import statistics
import threading
import time

import numpy as np
import psutil


class PeakRSS(contextlib.AbstractContextManager):
    """The process's peak resident memory (MB) while inside, sampled every 5 ms by a thread; `children`: plus
    the memory its child processes (`finetune predict`'s forked workers) hold alone (USS: a forked child's
    RSS counts every page it shares with its parent), sampled every 100 ms at a cost of ~12 ms each, so
    that such a phase is better timed outside."""

    def __init__(self, children: bool = False):
        self.children = children

    def __enter__(self):
        self.process, self.done = psutil.Process(), threading.Event()
        self.start = self.peak = self.process.memory_info().rss
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _children_uss(self) -> int:
        total = 0
        for child in self.process.children(recursive=True):
            with contextlib.suppress(psutil.Error):  # a worker that has just ended
                total += child.memory_full_info().uss
        return total

    def _sample(self) -> None:
        samples, children = 0, 0
        while not self.done.wait(0.005):
            samples += 1
            if self.children and samples % 20 == 0:
                children = self._children_uss()
            self.peak = max(self.peak, self.process.memory_info().rss + children)

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    def report(self) -> dict:
        return {"peak_rss_mb": self.peak / 2**20, "rss_rise_mb": (self.peak - self.start) / 2**20}


def median_rate(function, count: int, repeats: int) -> tuple[float, list[float], object]:
    """`count` / seconds of `function()`, median over `repeats` runs; each run's seconds; the last output."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        output = function()
        seconds.append(time.perf_counter() - start)
    return count / statistics.median(seconds), seconds, output


def latency_ms(function, texts: list[str], calls: int) -> dict:
    """p50/p95 milliseconds of `function(text)` over `calls` single texts, in steady state: after a first pass
    over the same texts (oneDNN builds a kernel for each new text length once), whose p50 is kept too."""

    def timed_pass() -> list[float]:
        times = []
        for i in range(calls):
            start = time.perf_counter()
            function(texts[i % len(texts)])
            times.append(1000 * (time.perf_counter() - start))
        return times

    first, times = timed_pass(), timed_pass()
    return {
        "p50_ms": float(np.percentile(times, 50)),
        "p95_ms": float(np.percentile(times, 95)),
        "first_pass_p50_ms": float(np.percentile(first, 50)),
        "calls": calls,
    }
