"""Derived sizes: processes per node, DataLoader workers and the /dev/shm sizeLimit.

The operator sizes /dev/shm by the same rules the trainer then loads by, so the default mount holds the
default loader (also in the CRD's `spec.sharedMemory.sizeLimit` description):

    need      = (workers x prefetchFactor + 1) x batchBytesHint x procsPerNode
    sizeLimit = max(256Mi, need / 0.8), rounded up to Mi

`need` is what the trainer's shm check counts: every worker's prefetched batches (each collated straight
into shared memory) plus the one the step holds, for every process on the node; the trainer fills at most
80% of the mount (`constants.SHM_HEADROOM_PERCENT`), so the default loader fits without being cut.
`workers` is `dataLoader.numWorkers` when it is an int; with `numWorkers: auto` it is `auto_workers` of
the CPU limit (else the CPU request) per process, the rule the trainer applies to its cgroup quota; with
no CPU set at all it is 4. An explicit `sharedMemory.sizeLimit` wins.

Memory-backed emptyDir pages count against the container's memory limit, so when `limits.memory` is set it
must be at least `requests.memory` (0 when unset) + sizeLimit; spec.load rejects the job otherwise, naming
`spec.resources.limits.memory`. The operator never raises a limit the user wrote.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from torchjob_core import constants, quantity

if TYPE_CHECKING:
    from torchjob_core.spec import TrainingJobSpec


def nproc_per_node(spec: TrainingJobSpec) -> int:
    """`procsPerNode`, with `auto` meaning one process per GPU, else 1."""
    if isinstance(spec.procs_per_node, int):
        return spec.procs_per_node
    return max(1, spec.resources.gpus_per_node)


def effective_backend(spec: TrainingJobSpec) -> str:
    """`backend`, with `auto` meaning nccl when the node has GPUs, else gloo."""
    if spec.backend == "auto":
        return "nccl" if spec.resources.gpus_per_node > 0 else "gloo"
    return spec.backend


def cpu_cores(spec: TrainingJobSpec) -> float | None:
    """The container's CPU limit, else its request, in cores; None when neither is set."""
    for source in (spec.resources.limits, spec.resources.requests):
        if "cpu" in source:
            return float(quantity.parse(source["cpu"]))
    return None


def auto_workers(cpus_per_process: float) -> int:
    """`numWorkers: auto` for a process that may use this many CPUs: 1.5 per CPU, floored, at most 16.

    Below one CPU per process extra worker processes only add contention and IPC, so load in-process.
    At one per CPU the cores idle 7-10% of the time (the workers fill their prefetch and block while the
    step runs); the extra half a worker per CPU fills that, and since the trainer's workers run nicer
    than the training process it does not slow the step: on 2 CPUs, JPEG decode, 3 workers reached
    0.94-1.05 of the bound in five runs, 2 workers 0.87-0.98. At two per CPU each sample's decode costs
    more CPU (1.13x), and 4 workers fell behind 3 (docs/benchmarks-dataloader.md). Workloads that wait
    on I/O rather than CPU can want more: `autotune` tries up to 2 per CPU, or set numWorkers.
    """
    if cpus_per_process < 1:
        return 0
    return min(constants.MAX_AUTO_WORKERS, math.floor(constants.AUTO_WORKERS_PER_CPU * cpus_per_process))


def worker_estimate(spec: TrainingJobSpec) -> int:
    """DataLoader workers per process used for sizing /dev/shm."""
    if isinstance(spec.data_loader.num_workers, int):
        return spec.data_loader.num_workers
    cores = cpu_cores(spec)
    if cores is None:
        return constants.DEFAULT_WORKER_ESTIMATE
    return auto_workers(cores / nproc_per_node(spec))


def shm_need_bytes(num_workers: int, prefetch_factor: int, batch_bytes: int, local_world_size: int) -> int:
    """The node's /dev/shm the loaders use: per process, each worker's prefetched batches and the one the
    step holds. In-process loading passes tensors by reference, not through shared memory."""
    if num_workers == 0:
        return 0
    return (num_workers * prefetch_factor + 1) * batch_bytes * max(1, local_world_size)


def derived_shm_bytes(spec: TrainingJobSpec) -> int:
    """The default /dev/shm sizeLimit in bytes (see the module docstring)."""
    batch = quantity.to_bytes(spec.data_loader.batch_bytes_hint)
    workers, prefetch = worker_estimate(spec), spec.data_loader.prefetch_factor
    need = shm_need_bytes(workers, prefetch, batch, nproc_per_node(spec))
    limit = -(-need * 100 // constants.SHM_HEADROOM_PERCENT)  # need / 80%, rounded up
    return quantity.round_up_mi(max(constants.SHM_MIN_BYTES, limit))


def shm_size_limit(spec: TrainingJobSpec) -> str:
    """The /dev/shm emptyDir sizeLimit as a quantity string: explicit override, else derived."""
    if spec.shared_memory.size_limit is not None:
        return spec.shared_memory.size_limit
    return quantity.format_mi(derived_shm_bytes(spec))


def shm_bytes(spec: TrainingJobSpec) -> int:
    """The /dev/shm sizeLimit in bytes."""
    return quantity.to_bytes(shm_size_limit(spec))
