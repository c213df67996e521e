"""GPU sharing, the process group and the GPU metrics, on CPU: NVML, CUDA and torch.distributed are faked
only at their boundary (harness.fakegpu; `init_process_group`)."""

from __future__ import annotations

import datetime
import logging
from typing import Any

import pynvml
import pytest
import torch
from harness.fakegpu import FakeGpu, GiB, fake_cuda
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from torchjob_trainer import distributed, gpu_metrics
from torchjob_trainer.config import ConfigError, TrainerConfig, from_sources
from torchjob_trainer.metrics import RankLabels, TrainerMetrics

LABELS = {"job": "j", "rank": "1", "local_rank": "1", "node_rank": "0"}
CUDA0 = torch.device("cuda", 0)


@pytest.mark.parametrize(
    ("local_rank", "count", "index"), [(0, 1, 0), (1, 1, 0), (3, 2, 1), (4, 2, 0), (5, 8, 5)]
)
def test_ranks_share_gpus_round_robin(local_rank: int, count: int, index: int) -> None:
    assert distributed.device_index(local_rank, count) == index


def test_nccl_refuses_shared_gpus_with_an_error_naming_the_fields() -> None:
    assert distributed.gpus_shared(CUDA0, local_world_size=2, device_count=1)
    assert not distributed.gpus_shared(CUDA0, local_world_size=2, device_count=2)
    assert not distributed.gpus_shared(torch.device("cpu"), local_world_size=4, device_count=0)
    with pytest.raises(
        ValueError, match=r"--backend \(TORCHJOB_BACKEND\): nccl refuses two ranks on one GPU"
    ):
        distributed.pick_backend("nccl", CUDA0, shared_gpu=True)
    with pytest.raises(ValueError, match="procsPerNode"):
        distributed.pick_backend("nccl", CUDA0, shared_gpu=True)


def test_auto_backend_falls_back_to_gloo_when_gpus_are_shared(caplog: pytest.LogCaptureFixture) -> None:
    assert distributed.pick_backend("auto", CUDA0) == "nccl"
    with caplog.at_level(logging.WARNING):
        assert distributed.pick_backend("auto", CUDA0, shared_gpu=True) == "gloo"
    assert "NCCL refuses" in caplog.text
    assert distributed.pick_backend("gloo", CUDA0, shared_gpu=True) == "gloo"
    assert distributed.pick_backend("auto", torch.device("cpu")) == "gloo"


class InitCalls:
    """`torch.distributed.init_process_group`, recording its arguments instead of joining a group."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, device_count: int) -> None:
        self.calls: list[dict[str, Any]] = []
        monkeypatch.setattr(torch.distributed, "init_process_group", lambda **kw: self.calls.append(kw))
        monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: device_count)


TWO_NODES = distributed.DistEnv(rank=1, world_size=2, local_rank=0, local_world_size=1, node_rank=1)


def test_nccl_joins_with_its_device_for_eager_init(monkeypatch: pytest.MonkeyPatch) -> None:
    """device_id makes NCCL connect at init_process_group (performance.md goal 13), not at the first
    collective."""
    init = InitCalls(monkeypatch, device_count=1)
    assert distributed.init(TWO_NODES, CUDA0, "nccl") == "nccl"
    assert init.calls == [{"backend": "nccl", "timeout": datetime.timedelta(minutes=10), "device_id": CUDA0}]
    init.calls.clear()
    assert distributed.init(TWO_NODES, CUDA0, "auto") == "nccl"
    assert init.calls[0]["device_id"] == CUDA0


def test_gloo_joins_without_a_device(monkeypatch: pytest.MonkeyPatch) -> None:
    init = InitCalls(monkeypatch, device_count=0)
    assert distributed.init(TWO_NODES, torch.device("cpu"), "auto") == "gloo"
    assert init.calls == [{"backend": "gloo", "timeout": datetime.timedelta(minutes=10)}]
    # Ranks sharing a GPU fall back to gloo, which takes no device either.
    init = InitCalls(monkeypatch, device_count=1)
    shared = distributed.DistEnv(rank=0, world_size=2, local_rank=1, local_world_size=2, node_rank=0)
    assert distributed.init(shared, CUDA0, "auto") == "gloo"
    assert "device_id" not in init.calls[0]


def test_memory_fraction_flag_env_and_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    assert from_sources([], {"TORCHJOB_CUDA_MEMORY_FRACTION": "0.45"}).cuda_memory_fraction == 0.45
    assert from_sources([]).cuda_memory_fraction is None
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ConfigError, match=r"--cuda-memory-fraction \(TORCHJOB_CUDA_MEMORY_FRACTION\)"):
            TrainerConfig(cuda_memory_fraction=bad)
    calls: list[tuple[float, Any]] = []
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, d: calls.append((f, d)))
    distributed.apply_memory_fraction(0.5, CUDA0)
    distributed.apply_memory_fraction(None, CUDA0)
    distributed.apply_memory_fraction(0.5, torch.device("cpu"))
    assert calls == [(0.5, CUDA0)]


def scrape(registry: CollectorRegistry) -> dict[str, tuple[dict[str, str], float]]:
    text = generate_latest(registry).decode()
    return {s.name: (s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples}


def test_nvml_metrics_per_rank_in_base_units(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeGpu(monkeypatch, pid=4242)
    registry = CollectorRegistry()
    collector = gpu_metrics.register(registry, LABELS, cuda_index=0, uuid="1234")
    assert collector is not None
    collector.pid = 4242
    series = scrape(registry)
    assert series["torchjob_trainer_gpu_utilization_ratio"] == ({**LABELS, "gpu": "0"}, 0.87)
    assert series["torchjob_trainer_gpu_memory_used_bytes"][1] == 20 * GiB
    assert series["torchjob_trainer_gpu_memory_total_bytes"][1] == 140 * GiB
    assert series["torchjob_trainer_gpu_process_memory_bytes"][1] == 3 * GiB
    assert set(fake.handles) == {"handle-1234"}  # found by UUID, not by NVML's host-wide index


def test_cuda_metrics_read_the_allocator_and_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeGpu(monkeypatch, pid=4242)
    fake_cuda(monkeypatch)
    metrics = TrainerMetrics(RankLabels("j", 1, 1, 0), cuda=True)
    assert metrics.gpu is not None  # NVML found cuda:0 by its UUID
    metrics.observe_window(samples_per_second=10.0, data_wait_ratio=0.1)
    series = scrape(metrics.registry)
    assert series["torchjob_trainer_cuda_memory_allocated_bytes"] == (LABELS, GiB)
    assert series["torchjob_trainer_cuda_memory_reserved_bytes"][1] == 2 * GiB
    assert series["torchjob_trainer_cuda_memory_max_allocated_bytes"][1] == 3 * GiB
    assert series["torchjob_trainer_gpu_utilization_ratio"] == ({**LABELS, "gpu": "0"}, 0.87)


def test_process_memory_is_absent_when_nvml_cannot_see_the_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeGpu(monkeypatch, pid=1)  # another PID namespace: NVML lists host pids
    registry = CollectorRegistry()
    assert gpu_metrics.register(registry, LABELS, cuda_index=2) is not None
    series = scrape(registry)
    assert "torchjob_trainer_gpu_process_memory_bytes" not in series
    assert series["torchjob_trainer_gpu_utilization_ratio"][0]["gpu"] == "2"


def test_a_failed_read_drops_the_gpu_series_not_the_scrape(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeGpu(monkeypatch, pid=1, fail_reads=True)
    registry = CollectorRegistry()
    assert gpu_metrics.register(registry, LABELS, cuda_index=0) is not None
    assert not [n for n in scrape(registry) if n.startswith("torchjob_trainer_gpu_")]


def test_unknown_device_turns_gpu_metrics_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    FakeGpu(monkeypatch, pid=1)
    with caplog.at_level(logging.WARNING):
        assert gpu_metrics.register(CollectorRegistry(), LABELS, cuda_index=0, uuid="GPU-other") is None
    assert "cannot find CUDA device 0" in caplog.text


def test_no_driver_turns_gpu_metrics_off(caplog: pytest.LogCaptureFixture) -> None:
    """The real pynvml on a CPU machine: no libnvidia-ml, so nvmlInit raises and metrics are off."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pytest.skip("this machine has an NVIDIA driver")
    with caplog.at_level(logging.INFO):
        assert gpu_metrics.register(CollectorRegistry(), LABELS, cuda_index=0) is None
    assert "GPU metrics off: NVML did not start" in caplog.text


def test_no_module_turns_gpu_metrics_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(__import__("sys").modules, "pynvml", None)  # import pynvml raises ImportError
    with caplog.at_level(logging.INFO):
        assert gpu_metrics.load_nvml() is None
    assert "nvidia-ml-py module (pynvml) is not installed" in caplog.text
