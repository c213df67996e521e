"""The same work on every CPU at once: what a core's CPU second buys when all cores are busy.

The overlap bound counts CPU seconds per sample measured with one process running. A loader that keeps
every core busy cannot buy its CPU seconds at that price on a host whose cores share something (a VM's
vCPUs that are hyperthreads of one physical core, a shared cache or memory bandwidth): the same decode
measured 480 us per sample alone and 531 us with a second process on the other vCPU, pinned apart, on
the 2-vCPU machine of docs/benchmarks-dataloader.md. `at_once` measures that price: it forks one process
per CPU, starts them together and returns what each one measured.
"""

from __future__ import annotations

import math
import multiprocessing as mp
from collections.abc import Callable
from typing import Any

Measure = Callable[[], tuple[float, ...]]
WAIT_SECONDS = 600  # a bound on a child that never answers, not a timing


def _child(measure: Measure, barrier: Any, results: Any) -> None:
    barrier.wait()
    results.put(measure())


def at_once(measure: Measure, cpus: float) -> list[tuple[float, ...]]:
    """`measure()` run in ceil(cpus) forked processes started together; each one's result.
    Fork, so that `measure` may close over the benchmark's data and model as they are."""
    procs = max(1, math.ceil(cpus))
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(procs), ctx.Queue()
    children = [ctx.Process(target=_child, args=(measure, barrier, results)) for _ in range(procs)]
    for child in children:
        child.start()
    try:
        return [results.get(timeout=WAIT_SECONDS) for _ in children]
    finally:
        for child in children:
            child.join(WAIT_SECONDS)
            if child.is_alive():
                child.kill()
