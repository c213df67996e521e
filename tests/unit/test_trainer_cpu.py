from __future__ import annotations

from pathlib import Path

import pytest
from torchjob_trainer.data.cpu import CpuBudget, auto_num_workers, cpu_budget


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    assert cpu_budget(cgroup_root=tmp_path, affinity=64) == CpuBudget(2.5, "cgroup-v2")


def test_cgroup_v2_unlimited_falls_back_to_cpu_limit(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu_budget(3.0, cgroup_root=tmp_path, affinity=64) == CpuBudget(3.0, "cpu-limit")


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    cpu_dir = tmp_path / "cpu,cpuacct"
    cpu_dir.mkdir()
    (cpu_dir / "cpu.cfs_quota_us").write_text("400000\n")
    (cpu_dir / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_budget(cgroup_root=tmp_path, affinity=64) == CpuBudget(4.0, "cgroup-v1")


def test_cgroup_v1_unlimited_then_affinity(tmp_path: Path) -> None:
    (tmp_path / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_budget(cgroup_root=tmp_path, affinity=12) == CpuBudget(12.0, "affinity")


def test_garbage_quota_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("lots 100000\n")
    assert cpu_budget(cgroup_root=tmp_path, affinity=2).source == "affinity"


@pytest.mark.parametrize(
    ("cpus", "procs", "workers"),
    [(8.0, 2, 6), (2.0, 2, 1), (1.0, 2, 0), (0.5, 1, 0), (3.5, 1, 5), (2.0, 1, 3), (128.0, 1, 16)],
)
def test_auto_workers_are_one_and_a_half_per_cpu_of_each_local_process(
    cpus: float, procs: int, workers: int
) -> None:
    assert auto_num_workers(CpuBudget(cpus, "cgroup-v2"), procs) == workers
