"""The DataLoader benchmark's CPU accounting (benchmarks/cpuacct.py): the split of a run's CPU into the
training process, its descendants and the rest, and the identity that explains the fraction of the bound.
Real /proc; the child below spends CPU time, nothing is timed against a budget."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import pytest
from harness.tools import load_script

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="Linux /proc only")

SPIN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\ninput()"


@pytest.fixture(scope="module")
def cpuacct() -> Any:
    return load_script("benchmarks/cpuacct.py", "bench_cpuacct")


def test_a_child_and_its_child_count_as_descendants_and_their_cpu_as_theirs(cpuacct: Any) -> None:
    # The loader workers' torch_shm_manager is a grandchild: the whole tree below counts. (This process
    # may have other children, such as a test cluster's; only this tree is asserted.)
    tree = f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {SPIN!r}])"
    child = subprocess.Popen([sys.executable, "-c", tree], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60  # a bound on the wait if the tree never shows, not a timing
        while time.monotonic() < deadline:
            grandchildren = cpuacct.descendants_cpu(child.pid)
            if len(grandchildren) == 1 and sum(grandchildren.values()) >= 0.25:
                break
            time.sleep(0.05)
        assert len(grandchildren) == 1 and sum(grandchildren.values()) >= 0.25
        below = cpuacct.descendants_cpu(os.getpid())
        assert {child.pid, *grandchildren} <= below.keys()
    finally:
        child.communicate(b"\n", timeout=30)
    assert child.pid not in cpuacct.descendants_cpu(os.getpid())


def test_usage_splits_the_cpu_per_sample_and_counts_exited_workers_as_other(cpuacct: Any) -> None:
    snap = cpuacct.Snapshot
    start = snap(cpus=2, wall=10.0, idle=100.0, steal=5.0, busy=50.0, main=3.0, descendants={7: 1.0, 8: 2.0})
    # 2 s on 2 CPUs: 0.4 s idle, 0.1 s stolen, 3.5 s busy; main 1.5 s; worker 7 0.5 s, new worker 9
    # 1.0 s, worker 8 gone (its 0.5 s falls to other).
    end = snap(cpus=2, wall=12.0, idle=100.4, steal=5.1, busy=53.5, main=4.5, descendants={7: 1.5, 9: 1.0})
    used = cpuacct.usage(start, end, samples=1000)
    assert used.idle_share == pytest.approx(0.1)
    assert used.steal_share == pytest.approx(0.025)
    assert used.main_cpu_seconds_per_sample == pytest.approx(1.5e-3)
    assert used.descendants_cpu_seconds_per_sample == pytest.approx(1.5e-3)
    assert used.other_cpu_seconds_per_sample == pytest.approx(0.5e-3)
    assert used.cpu_seconds_per_sample == pytest.approx(3.5e-3)


def test_this_process_cpu_shows_in_a_snapshot(cpuacct: Any) -> None:
    first = cpuacct.snapshot()
    end = os.times().user + 0.2
    while os.times().user < end:
        pass
    second = cpuacct.snapshot()
    assert second.main - first.main >= 0.15
    assert second.busy - first.busy >= 0.15


def test_processes_alive_when_the_benchmark_starts_are_not_its_workers(
    cpuacct: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In a test session the benchmark runs inside pytest, whose helpers (a forkserver, a resource
    # tracker) are children too: they were there before, so they are not counted; a child started later
    # is. The disowned one's own children would still count (a worker of a disowned forkserver).
    monkeypatch.setattr(cpuacct, "_foreign", set())  # restored at the end
    helper = subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE)
    try:
        cpuacct.disown_present()
        worker = subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE)
        try:
            below = cpuacct.descendants_cpu(os.getpid())
            assert worker.pid in below and helper.pid not in below
        finally:
            worker.communicate(b"\n", timeout=30)
    finally:
        helper.communicate(b"\n", timeout=30)
