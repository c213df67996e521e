"""Per-rank Prometheus metrics: each rank serves its own registry on `base port + LOCAL_RANK`.

Names follow Prometheus conventions (base units, `_total` counters). Throughput and data-wait are
best computed in PromQL from the counters:
`rate(torchjob_trainer_samples_total[1m])` and
`rate(torchjob_trainer_data_wait_seconds_total[1m]) / rate(torchjob_trainer_step_seconds_total[1m])`.
The gauges give the same numbers over the trainer's last progress window for quick looks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from torchjob_core import constants

from torchjob_trainer import gpu_metrics

log = logging.getLogger(__name__)

PREFIX = constants.TRAINER_METRIC_PREFIX
LABELS = ("job", "rank", "local_rank", "node_rank")
# Waits between tries of a busy metrics port (about 3.5 s in all).
SERVE_RETRY_DELAYS = (0.5, 1.0, 2.0)
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class RankLabels:
    job: str
    rank: int
    local_rank: int
    node_rank: int

    def values(self) -> dict[str, str]:
        return {
            "job": self.job,
            "rank": str(self.rank),
            "local_rank": str(self.local_rank),
            "node_rank": str(self.node_rank),
        }


def _cuda_uuid(index: int) -> str | None:
    """The device's UUID, which NVML's numbering (all host GPUs) shares with CUDA's (visible ones)."""
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    return str(uuid) if uuid is not None else None


class TrainerMetrics:
    """All trainer metrics of one rank, in a private registry (several ranks may share a pod)."""

    def __init__(self, labels: RankLabels, *, cuda: bool) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        names = list(LABELS)

        def counter(name: str, doc: str) -> Counter:
            return Counter(PREFIX + name, doc, names, registry=r)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(PREFIX + name, doc, names, registry=r)

        v = labels.values()
        self.samples = counter("samples_total", "Training samples processed by this rank.").labels(**v)
        self.steps = counter("steps_total", "Optimizer steps taken by this rank in this process.").labels(**v)
        self.step_seconds = counter(
            "step_seconds_total", "Wall time of training steps, data wait included."
        ).labels(**v)
        self.data_wait = counter(
            "data_wait_seconds_total", "Time the loop blocked waiting for a batch."
        ).labels(**v)
        self.step_duration = Histogram(
            PREFIX + "step_duration_seconds",
            "Wall time of one training step, data wait included.",
            names,
            buckets=STEP_BUCKETS,
            registry=r,
        ).labels(**v)
        self.checkpoints = counter("checkpoints_total", "Checkpoints written (rank 0).").labels(**v)
        self.checkpoint_seconds = counter(
            "checkpoint_seconds_total", "Time spent writing checkpoints."
        ).labels(**v)
        self.data_wait_ratio = gauge(
            "data_wait_ratio", "Data wait / step time over the last window (0-1)."
        ).labels(**v)
        self.samples_per_second = gauge("samples_per_second", "Throughput over the last window.").labels(**v)
        self.loss = gauge("loss", "Training loss of the last step.").labels(**v)
        self.epoch = gauge("epoch", "Current epoch (0-based).").labels(**v)
        self.step = gauge("step", "Global step (resumed runs continue the count).").labels(**v)
        # With step, what the operator's status.progress (and its ETA) is read from.
        self.final_step = gauge("final_step", "Global step at which training ends (epochs x steps).").labels(
            **v
        )
        self.world_size = gauge(
            "world_size", "Ranks in the job (its throughput is about this x one rank's)."
        ).labels(**v)
        self.workers = gauge("dataloader_workers", "DataLoader worker processes of this rank.").labels(**v)
        self.prefetch = gauge(
            "dataloader_prefetch_factor", "DataLoader prefetch factor of this rank."
        ).labels(**v)
        # Set once, after the first step (start-up ends there): where this process's start-up went.
        self.startup_phase = Gauge(
            PREFIX + "startup_phase_seconds",
            "Seconds of each start-up phase of this process (startup.py), set after its first step.",
            [*names, "phase"],
            registry=r,
        )
        self.startup = gauge(
            "startup_seconds", "Seconds from this process's start to the end of its first training step."
        ).labels(**v)
        self._labels = v
        self.cuda = cuda
        if cuda:
            self.cuda_allocated = gauge("cuda_memory_allocated_bytes", "CUDA memory held by tensors.").labels(
                **v
            )
            self.cuda_reserved = gauge(
                "cuda_memory_reserved_bytes", "CUDA memory reserved by the caching allocator."
            ).labels(**v)
            self.cuda_peak = gauge(
                "cuda_memory_max_allocated_bytes", "Peak CUDA memory held by tensors."
            ).labels(**v)
            index = torch.cuda.current_device()
            self.gpu = gpu_metrics.register(r, v, index, _cuda_uuid(index))

    def observe_step(self, *, samples: int, step_seconds: float, wait_seconds: float, loss: float) -> None:
        self.samples.inc(samples)
        self.steps.inc()
        self.step_seconds.inc(step_seconds)
        self.data_wait.inc(wait_seconds)
        self.step_duration.observe(step_seconds)
        self.loss.set(loss)

    def observe_startup(self, phases: dict[str, float], total_seconds: float) -> None:
        for phase, seconds in phases.items():
            self.startup_phase.labels(**self._labels, phase=phase).set(seconds)
        self.startup.set(total_seconds)

    def observe_window(self, *, samples_per_second: float, data_wait_ratio: float) -> None:
        self.samples_per_second.set(samples_per_second)
        self.data_wait_ratio.set(min(1.0, max(0.0, data_wait_ratio)))
        if self.cuda:
            self.cuda_allocated.set(torch.cuda.memory_allocated())
            self.cuda_reserved.set(torch.cuda.memory_reserved())
            self.cuda_peak.set(torch.cuda.max_memory_allocated())

    def serve(
        self,
        base_port: int,
        local_rank: int,
        *,
        retry_delays: tuple[float, ...] = SERVE_RETRY_DELAYS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> int | None:
        """Serve /metrics on `base_port + local_rank`; returns the port, or None when disabled or busy.

        A port still held by the previous process of an in-pod restart frees itself in a moment, so a
        busy port is retried with backoff; then one error line, and training goes on without metrics."""
        if base_port == 0:
            return None
        port = base_port + local_rank
        for delay in (*retry_delays, None):
            try:
                start_http_server(port, registry=self.registry)
            except OSError as exc:
                if delay is None:
                    log.error(
                        "--metrics-port (TORCHJOB_METRICS_PORT): cannot serve on port %d after %d tries: %s; "
                        "training goes on without metrics",
                        port,
                        len(retry_delays) + 1,
                        exc,
                    )
                    return None
                sleep(delay)
            else:
                log.info("metrics on :%d/metrics", port)
                return port
        return None
