"""How many CPUs this container may use: the cgroup quota, not the host's core count."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from torchjob_core import sizing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CpuBudget:
    cpus: float
    source: str  # "cgroup-v2", "cgroup-v1", "cpu-limit", "affinity"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_v2_quota(root: Path) -> float | None:
    """`cpu.max` holds `<quota> <period>` or `max <period>`."""
    text = _read(root / "cpu.max")
    if not text:
        return None
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    quota, period = int(parts[0]), int(parts[1])
    return quota / period if quota > 0 and period > 0 else None


def cgroup_v1_quota(root: Path) -> float | None:
    """`cpu.cfs_quota_us` is -1 without a limit."""
    for cpu_dir in (root / "cpu", root / "cpu,cpuacct", root):
        quota, period = _read(cpu_dir / "cpu.cfs_quota_us"), _read(cpu_dir / "cpu.cfs_period_us")
        if quota is None or period is None:
            continue
        q, p = int(quota), int(period)
        return q / p if q > 0 and p > 0 else None
    return None


def cpu_budget(
    cpu_limit: float | None = None, cgroup_root: Path = Path("/sys/fs/cgroup"), affinity: int | None = None
) -> CpuBudget:
    """The container's CPUs: cgroup v2 quota, v1 quota, then `--cpu-limit`, then the affinity mask."""
    for source, read in (("cgroup-v2", cgroup_v2_quota), ("cgroup-v1", cgroup_v1_quota)):
        try:
            quota = read(cgroup_root)
        except ValueError:
            log.warning("unreadable %s CPU quota under %s", source, cgroup_root)
            quota = None
        if quota is not None:
            return CpuBudget(quota, source)
    if cpu_limit is not None:
        return CpuBudget(cpu_limit, "cpu-limit")
    if affinity is None:
        affinity = len(os.sched_getaffinity(0))
    return CpuBudget(float(affinity), "affinity")


def auto_num_workers(budget: CpuBudget, local_world_size: int) -> int:
    """Workers per process for `auto`: `sizing.auto_workers` of the CPUs each process may use, the rule
    the operator sized /dev/shm by."""
    return sizing.auto_workers(budget.cpus / max(1, local_world_size))
