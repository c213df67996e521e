"""The DataLoader benchmark's busy bound (benchmarks/contention.py): the same measurement forked onto
every CPU at once. Real processes; nothing is timed."""

from __future__ import annotations

import multiprocessing
import os
import time
from typing import Any

import pytest
from harness.tools import load_script


@pytest.fixture(scope="module")
def contention() -> Any:
    return load_script("benchmarks/contention.py", "bench_contention")


def test_one_forked_process_per_cpu_and_all_of_them_at_once(contention: Any) -> None:
    parent = os.getpid()
    arrived = multiprocessing.get_context("fork").Value("i", 0)

    def measure() -> tuple[float, ...]:
        # Each child counts itself in, then waits for the others: only children that run at the
        # same time all see the full count (a bounded wait, not a timing).
        with arrived.get_lock():
            arrived.value += 1
        deadline = time.monotonic() + 60
        while arrived.value < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        return (float(os.getpid()), float(os.getppid()), float(arrived.value))

    results = contention.at_once(measure, 2.5)  # a fractional quota still spreads over 3 CPUs
    assert len(results) == 3
    assert len({pid for pid, _, _ in results}) == 3
    assert all(ppid == parent for _, ppid, _ in results)
    assert all(seen == 3 for _, _, seen in results)


def test_at_least_one_process(contention: Any) -> None:
    assert len(contention.at_once(lambda: (1.0,), 0.2)) == 1
