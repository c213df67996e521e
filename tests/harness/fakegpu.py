"""A GPU on a CPU machine, faked only at its boundaries: the pynvml functions and the torch.cuda calls the
trainer's metrics make. For the unit tests of the GPU series and the promtool lint of a CUDA scrape."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pynvml
import pytest
import torch

GiB = 1 << 30


class FakeGpu:
    """One GPU as NVML reports it; installed over the real pynvml module's functions."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, pid: int, fail_reads: bool = False) -> None:
        self.handles: list[Any] = []

        def by_uuid(uuid: str) -> str:
            if uuid != "GPU-1234":
                raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
            return "handle-1234"

        def read(value: Any) -> Any:
            def call(handle: Any) -> Any:
                self.handles.append(handle)
                if fail_reads:
                    raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
                return value

            return call

        procs = [
            SimpleNamespace(pid=pid + 1, usedGpuMemory=GiB),
            SimpleNamespace(pid=pid, usedGpuMemory=3 * GiB),
        ]
        for name, fn in {
            "nvmlInit": lambda: None,
            "nvmlDeviceGetHandleByUUID": by_uuid,
            "nvmlDeviceGetHandleByIndex": lambda i: f"handle-{i}",
            "nvmlDeviceGetUtilizationRates": read(SimpleNamespace(gpu=87, memory=40)),
            "nvmlDeviceGetMemoryInfo": read(SimpleNamespace(used=20 * GiB, total=140 * GiB, free=120 * GiB)),
            "nvmlDeviceGetComputeRunningProcesses": read(procs),
        }.items():
            monkeypatch.setattr(pynvml, name, fn)


def fake_cuda(monkeypatch: pytest.MonkeyPatch, *, uuid: str = "1234") -> None:
    """CUDA device 0 (UUID `uuid`, the one FakeGpu knows) with the allocator at 1, 2 and 3 GiB (allocated,
    reserved, peak): the torch.cuda calls of `TrainerMetrics(cuda=True)`."""
    for name, fn in {
        "current_device": lambda: 0,
        "get_device_properties": lambda _index: SimpleNamespace(uuid=uuid),
        "memory_allocated": lambda: GiB,
        "memory_reserved": lambda: 2 * GiB,
        "max_memory_allocated": lambda: 3 * GiB,
    }.items():
        monkeypatch.setattr(torch.cuda, name, fn)
