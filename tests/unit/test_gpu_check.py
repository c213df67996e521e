"""hack/gpu-check.sh --dry-run: imports and arguments only, so the GPU script is known to start on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from harness.tools import load_script
from torchjob_trainer.data.loader import LoaderSettings

ROOT = Path(__file__).resolve().parents[2]


def load() -> Any:
    return load_script("benchmarks/gpu_check.py", "gpu_check")


def test_dry_run_imports_everything_and_plans_every_check(tmp_path: Path) -> None:
    gpu_check = load()
    out = tmp_path / "r.json"
    assert gpu_check.main(["--dry-run", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["dry_run"] is True
    assert report["plan"]["checks"] == list(gpu_check.CHECKS)
    assert set(report["plan"]["imports"].values()) == {"ok"}
    assert set(gpu_check.RUNNERS) == set(gpu_check.CHECKS)


def test_arguments_are_validated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    gpu_check = load()
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.parse_args(["--only", "loader,bogus"])
    assert exit_info.value.code == 2
    assert gpu_check.parse_args(["--only", "loader, sharing"]).only == ["loader", "sharing"]
    monkeypatch.setenv("OUT", str(tmp_path))
    assert gpu_check.parse_args([]).out == tmp_path / "gpu-check.json"


def test_loader_steps_are_timed_as_the_trainer_times_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loader check's data wait: blocked in next() / step wall time with that wait, after warm-up."""
    gpu_check = load()
    clock = SimpleNamespace(now=0.0)
    timing = sys.modules[gpu_check.steady_steps.__module__]  # benchmarks/steptiming.py, shared
    monkeypatch.setattr(timing, "time", SimpleNamespace(perf_counter=lambda: clock.now))

    def batches() -> Any:
        for _ in range(5):
            clock.now += 1.0  # waiting for the loader
            yield torch.zeros(8, 3), torch.zeros(8)

    def step(batch: Any) -> None:
        clock.now += 3.0

    run = gpu_check.steady_steps(batches(), step, warmup=2, count=10)
    assert run.steps == 3  # after the 2 warm-up steps, until the loader ran out
    assert run.wait_ratio == 0.25
    assert run.samples_per_second == 2.0  # 8 samples per 4 s
    assert LoaderSettings(16, True, True, 2).batches_in_flight() == 33  # start-up batch + prefetched
    assert LoaderSettings(0, False, False, 2).batches_in_flight() == 1


def test_the_script_dry_runs_on_cpu_and_writes_under_out(tmp_path: Path) -> None:
    env = dict(os.environ, OUT=str(tmp_path))
    proc = subprocess.run(
        ["bash", str(ROOT / "hack" / "gpu-check.sh"), "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((tmp_path / "gpu-check.json").read_text())["plan"]["ok"] is True
