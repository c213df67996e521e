"""Where a run's CPU went: idle cores, the training process, its loader workers, everyone else.

The overlap bound is `cpus / (fetch + step CPU per sample)`. A run on the same cores reaches
`cpus x (1 - idle - steal) / (CPU per sample it spent)`, so its fraction of the bound is exactly

    (1 - idle share - steal share) x (fetch + step) / (CPU per sample spent)

when nothing else runs. `Usage` holds both factors, the CPU split into the training process (the step,
plus receiving batches), its descendants (the loader workers and their `torch_shm_manager`: decode,
collate, plus handing batches over) and the rest of the machine (other tenants), read from /proc at the
start and the end of the run. Linux only; on another system `snapshot` returns None and the benchmark
leaves the columns out.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PROC = Path("/proc")
# Processes below this one that the benchmark did not start (see `disown_present`).
_foreign: set[int] = set()


@dataclass(frozen=True)
class Snapshot:
    cpus: int  # the CPUs counted below: this process's affinity set
    wall: float
    idle: float  # CPU seconds idle (and waiting on I/O), summed over the benchmark's CPUs
    steal: float  # CPU seconds the hypervisor gave to other guests
    busy: float  # CPU seconds spent on anything
    main: float  # this process, all its threads
    descendants: Mapping[int, float]  # pid -> CPU seconds of the live processes below this one


@dataclass(frozen=True)
class Usage:
    idle_share: float
    steal_share: float
    main_cpu_seconds_per_sample: float
    descendants_cpu_seconds_per_sample: float
    other_cpu_seconds_per_sample: float

    @property
    def cpu_seconds_per_sample(self) -> float:
        return (
            self.main_cpu_seconds_per_sample
            + self.descendants_cpu_seconds_per_sample
            + self.other_cpu_seconds_per_sample
        )


def cpu_times(cpus: set[int]) -> tuple[float, float, float] | None:
    """(idle, steal, busy) CPU seconds over `cpus`, from /proc/stat's per-CPU lines."""
    try:
        lines = (PROC / "stat").read_text().splitlines()
    except OSError:
        return None
    idle = steal = busy = 0
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
        idle += ticks[3] + ticks[4]
        steal += ticks[7]
        busy += ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]
    return idle / TICK, steal / TICK, busy / TICK


def _stat_fields(pid: str) -> list[str] | None:
    try:
        text = (PROC / pid / "stat").read_text()
    except OSError:
        return None  # exited between the listing and the read
    return text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": state is field 0


def disown_present() -> None:
    """Leave the processes that live below this one now out of every later snapshot. Called where a
    benchmark starts: inside a longer-lived process (a test session) they are someone else's helpers (a
    forkserver, a resource tracker), and one clock tick of theirs would count as a loader worker's."""
    _foreign.clear()
    _foreign.update(descendants_cpu(os.getpid()))


def descendants_cpu(root: int) -> dict[int, float]:
    """pid -> CPU seconds (utime + stime) of each live process below `root`, less the disowned ones
    (their children still count: a worker forked by a disowned forkserver is the benchmark's)."""
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry.name)
        if fields is None:
            continue
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        cpu[pid] = (int(fields[11]) + int(fields[12])) / TICK
    below: dict[int, float] = {}
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        if pid not in _foreign:
            below[pid] = cpu.get(pid, 0.0)
        stack += children.get(pid, [])
    return below


def snapshot() -> Snapshot | None:
    if not hasattr(os, "sched_getaffinity"):
        return None  # not Linux: no /proc either
    cpus = os.sched_getaffinity(0)
    times = cpu_times(cpus)
    if times is None:
        return None
    idle, steal, busy = times
    return Snapshot(
        len(cpus), time.perf_counter(), idle, steal, busy, time.process_time(), descendants_cpu(os.getpid())
    )


def usage(start: Snapshot, end: Snapshot, samples: int) -> Usage:
    """The run between two snapshots, per sample and as shares of the CPUs they counted x wall."""
    capacity = end.cpus * (end.wall - start.wall)
    main = end.main - start.main
    # Per process: workers started after `start` count from zero. One that exited before `end` took its
    # CPU time with it, which then shows as `other`: take `end` while the workers live.
    below = sum(cpu - start.descendants.get(pid, 0.0) for pid, cpu in end.descendants.items())
    other = max(0.0, (end.busy - start.busy) - main - below)
    return Usage(
        idle_share=(end.idle - start.idle) / capacity,
        steal_share=(end.steal - start.steal) / capacity,
        main_cpu_seconds_per_sample=main / samples,
        descendants_cpu_seconds_per_sample=below / samples,
        other_cpu_seconds_per_sample=other / samples,
    )
