"""Keep DataLoader workers inside /dev/shm so that they never die with "Bus error".

Worker outputs travel to the main process through shared memory. At most
`workers x prefetch_factor` batches per process are in flight, plus the one the training step holds,
and every process on the node shares the same mount, so the need is
`(workers x prefetch + 1) x batch_bytes x local_world_size`.
If that does not fit, lower the prefetch first (cheapest), then the workers, and as a last resort load
in-process (`num_workers=0`), which uses no shared memory. Torch's sharing strategy (data/workers.py)
changes nothing here: both allocate from /dev/shm. Nor do the slots (data/slots.py): each worker's
block holds `prefetch_factor` batches (each rounded up to a page), and the batch the step holds is a
private copy; a batch that outgrows its slot goes torch's way, beside the block.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from torchjob_core import constants
from torchjob_core.sizing import shm_need_bytes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShmPlan:
    num_workers: int
    prefetch_factor: int
    need_bytes: int
    available_bytes: int
    adapted: bool
    reason: str


def shm_available_bytes(path: str) -> int | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def plan_shm(
    *,
    num_workers: int,
    prefetch_factor: int,
    batch_bytes: int,
    local_world_size: int,
    available_bytes: int | None,
) -> ShmPlan:
    """Pick the largest loader config (prefetch first, then workers) whose batches fit in the mount."""
    need = shm_need_bytes(num_workers, prefetch_factor, batch_bytes, local_world_size)
    if available_bytes is None or num_workers == 0:
        why = "no workers" if num_workers == 0 else "shm size unknown"
        return ShmPlan(num_workers, prefetch_factor, need, available_bytes or 0, False, why)
    # The operator's default size holds the default loader within this budget (torchjob_core.sizing).
    budget = available_bytes * constants.SHM_HEADROOM_PERCENT // 100
    if need <= budget:
        return ShmPlan(num_workers, prefetch_factor, need, available_bytes, False, "fits")
    for prefetch in range(prefetch_factor - 1, 0, -1):
        need = shm_need_bytes(num_workers, prefetch, batch_bytes, local_world_size)
        if need <= budget:
            return ShmPlan(num_workers, prefetch, need, available_bytes, True, "lowered prefetch_factor")
    for workers in range(num_workers - 1, 0, -1):
        need = shm_need_bytes(workers, 1, batch_bytes, local_world_size)
        if need <= budget:
            return ShmPlan(workers, 1, need, available_bytes, True, "lowered num_workers")
    return ShmPlan(0, prefetch_factor, 0, available_bytes, True, "loading in-process (num_workers=0)")


def log_plan(plan: ShmPlan, requested_workers: int, requested_prefetch: int, shm_path: str) -> None:
    if not plan.adapted:
        log.info(
            "shm %s: need %d bytes of %d available (%s)",
            shm_path,
            plan.need_bytes,
            plan.available_bytes,
            plan.reason,
        )
        return
    log.warning(
        "shm %s too small for num_workers=%d prefetch_factor=%d (%d bytes available, %d%% for loaders): "
        "%s -> num_workers=%d prefetch_factor=%d needing %d bytes; "
        "mount a larger /dev/shm to restore throughput",
        shm_path,
        requested_workers,
        requested_prefetch,
        plan.available_bytes,
        constants.SHM_HEADROOM_PERCENT,
        plan.reason,
        plan.num_workers,
        plan.prefetch_factor,
        plan.need_bytes,
    )
