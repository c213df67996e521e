"""hack/gpu-check.sh --dry-run: imports and arguments only, so the GPU script is known to start on CPU."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from harness.tools import load_script

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
