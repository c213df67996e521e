"""`promtool check metrics` on the trainer's CUDA and NVML series, which no CPU scrape has: the metrics of a
rank on a GPU, with CUDA and NVML faked at their boundary (harness.fakegpu), rendered as /metrics serves
them."""

from __future__ import annotations

import os
import subprocess

import pytest
from harness.fakegpu import FakeGpu, fake_cuda
from prometheus_client import generate_latest
from torchjob_trainer.metrics import RankLabels, TrainerMetrics

GPU_SERIES = (
    "torchjob_trainer_cuda_memory_allocated_bytes",
    "torchjob_trainer_cuda_memory_reserved_bytes",
    "torchjob_trainer_cuda_memory_max_allocated_bytes",
    "torchjob_trainer_gpu_utilization_ratio",
    "torchjob_trainer_gpu_memory_used_bytes",
    "torchjob_trainer_gpu_memory_total_bytes",
    "torchjob_trainer_gpu_process_memory_bytes",
)


def test_gpu_metrics_pass_promtool(promtool: str, monkeypatch: pytest.MonkeyPatch) -> None:
    FakeGpu(monkeypatch, pid=os.getpid())
    fake_cuda(monkeypatch)
    metrics = TrainerMetrics(RankLabels("lint", 0, 0, 0), cuda=True)
    metrics.observe_step(samples=64, step_seconds=0.03, wait_seconds=0.001, loss=2.3)
    metrics.observe_window(samples_per_second=2100.0, data_wait_ratio=0.03)
    text = generate_latest(metrics.registry).decode()
    assert [name for name in GPU_SERIES if f"\n{name}{{" not in text] == []
    lint = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False, timeout=60
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert lint.stdout.strip() == "" and lint.stderr.strip() == "", lint.stdout + lint.stderr
