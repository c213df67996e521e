"""Derived sizes: processes per node, DataLoader worker estimate and the /dev/shm sizeLimit.

The /dev/shm rule (also in the CRD's `spec.sharedMemory.sizeLimit` description):

    sizeLimit = max(256Mi, 2 x procsPerNode x workers x prefetchFactor x batchBytesHint), rounded up to Mi

`workers` is `dataLoader.numWorkers` when it is an int. With `numWorkers: auto` it is the CPU limit (else the
CPU request) divided by the processes per node, at least 1; with no CPU set at all it is 4. The factor 2
leaves room for the pinned-memory copy and collate buffers next to the batches in flight. An explicit
`sharedMemory.sizeLimit` wins.

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


def worker_estimate(spec: TrainingJobSpec) -> int:
    """DataLoader workers per process used for sizing /dev/shm."""
    if isinstance(spec.data_loader.num_workers, int):
        return spec.data_loader.num_workers
    cores = cpu_cores(spec)
    if cores is None:
        return constants.DEFAULT_WORKER_ESTIMATE
    return max(1, math.floor(cores / nproc_per_node(spec)))


def derived_shm_bytes(spec: TrainingJobSpec) -> int:
    """The default /dev/shm sizeLimit in bytes (see the module docstring)."""
    batch = quantity.to_bytes(spec.data_loader.batch_bytes_hint)
    need = 2 * nproc_per_node(spec) * worker_estimate(spec) * spec.data_loader.prefetch_factor * batch
    return quantity.round_up_mi(max(constants.SHM_MIN_BYTES, need))


def shm_size_limit(spec: TrainingJobSpec) -> str:
    """The /dev/shm emptyDir sizeLimit as a quantity string: explicit override, else derived."""
    if spec.shared_memory.size_limit is not None:
        return spec.shared_memory.size_limit
    return quantity.format_mi(derived_shm_bytes(spec))


def shm_bytes(spec: TrainingJobSpec) -> int:
    """The /dev/shm sizeLimit in bytes."""
    return quantity.to_bytes(shm_size_limit(spec))
