"""GPU utilisation and memory per rank from NVML (`nvidia-ml-py`, imported as `pynvml`), read at scrape.

torch's allocator gauges (`cuda_memory_*`) see this process's tensors only. NVML sees the device: how
busy it is, how much memory every process on it holds, and this process's own share including its CUDA
context. NVML's utilisation is the fraction of the sample period in which at least one kernel ran, so it
says "the GPU is working", not how many SMs are (performance.md section 4); use DCGM's profiling fields
for that. Values are read when Prometheus scrapes (a custom collector), so the training loop pays
nothing. Without the module, the driver or the device the metrics are off, logged once at start-up.

Series (labels `job`, `rank`, `local_rank`, `node_rank`, `gpu` = the CUDA index this rank uses):

- `torchjob_trainer_gpu_utilization_ratio`: kernel-active fraction of the last sample period (0-1);
- `torchjob_trainer_gpu_memory_used_bytes`, `_gpu_memory_total_bytes`: the whole device;
- `torchjob_trainer_gpu_process_memory_bytes`: this process on the device, when NVML can see its pid
  (in a container whose PID namespace hides host pids it cannot, and the series is absent).

Ranks sharing a GPU report the same device-wide values: `max by (gpu, node)`, not `sum`, across them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from torchjob_core import constants

log = logging.getLogger(__name__)

PREFIX = f"{constants.TRAINER_METRIC_PREFIX}gpu_"
LABELS = ("job", "rank", "local_rank", "node_rank", "gpu")


def load_nvml() -> ModuleType | None:
    """`pynvml`, initialised; None (logged) when the module or the driver is missing."""
    try:
        import pynvml  # type: ignore[import-untyped]  # noqa: PLC0415  (a CPU host may lack it)
    except ImportError:
        log.info("GPU metrics off: the nvidia-ml-py module (pynvml) is not installed")
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        log.info("GPU metrics off: NVML did not start (%s)", exc)
        return None
    module: ModuleType = pynvml
    return module


def device_handle(nvml: ModuleType, cuda_index: int, uuid: str | None) -> Any:
    """The NVML handle of the GPU behind CUDA device `cuda_index`.

    NVML numbers all GPUs of the host, CUDA only the visible ones (CUDA_VISIBLE_DEVICES), so the UUID
    is the reliable key; the index is the fallback when the UUID is unknown.
    """
    if uuid:
        return nvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
    return nvml.nvmlDeviceGetHandleByIndex(cuda_index)


class NvmlCollector(Collector):
    """Reads one device through NVML at every scrape; an NVML error drops that scrape's GPU series."""

    def __init__(self, nvml: ModuleType, handle: Any, labels: dict[str, str], pid: int | None = None) -> None:
        self.nvml = nvml
        self.handle = handle
        self.values = [labels[name] for name in LABELS]
        self.pid = os.getpid() if pid is None else pid

    def _family(self, name: str, doc: str, value: float) -> GaugeMetricFamily:
        family = GaugeMetricFamily(PREFIX + name, doc, labels=LABELS)
        family.add_metric(self.values, value)
        return family

    def _process_bytes(self) -> int | None:
        for proc in self.nvml.nvmlDeviceGetComputeRunningProcesses(self.handle):
            if proc.pid == self.pid and proc.usedGpuMemory is not None:
                return int(proc.usedGpuMemory)
        return None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            util = self.nvml.nvmlDeviceGetUtilizationRates(self.handle)
            memory = self.nvml.nvmlDeviceGetMemoryInfo(self.handle)
            own = self._process_bytes()
        except self.nvml.NVMLError as exc:
            log.debug("NVML read failed: %s", exc)
            return
        yield self._family(
            "utilization_ratio", "Fraction of time a kernel ran on this rank's GPU.", util.gpu / 100
        )
        yield self._family(
            "memory_used_bytes", "Memory in use on this rank's GPU (all processes).", memory.used
        )
        yield self._family("memory_total_bytes", "Memory of this rank's GPU.", memory.total)
        if own is not None:
            yield self._family("process_memory_bytes", "This process's memory on its GPU (NVML).", own)


def register(
    registry: CollectorRegistry, labels: dict[str, str], cuda_index: int, uuid: str | None = None
) -> NvmlCollector | None:
    """Add the GPU series of CUDA device `cuda_index` to the registry; None when NVML is unavailable."""
    nvml = load_nvml()
    if nvml is None:
        return None
    try:
        handle = device_handle(nvml, cuda_index, uuid)
    except nvml.NVMLError as exc:
        log.warning("GPU metrics off: NVML cannot find CUDA device %d (uuid %s): %s", cuda_index, uuid, exc)
        return None
    collector = NvmlCollector(nvml, handle, {**labels, "gpu": str(cuda_index)})
    registry.register(collector)
    log.info("GPU metrics from NVML for cuda:%d", cuda_index)
    return collector
