"""Steps timed as the trainer times its own, shared by the benchmarks (gpu_check.py, dataloader.py).

No torch import at module level: gpu_check's `--dry-run` imports this on a machine that may lack it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torchjob_trainer.stepstats import StepSums


def timed_steps(batches: Iterator[Any], step: Callable[[Any], None], count: int) -> StepSums:
    """Up to `count` steps timed as the trainer times its own (`Trainer._next_step`): the wait in
    `next()` and the step's wall time with that wait, summed in the trainer's `StepSums`."""
    from torchjob_trainer.stepstats import StepSums

    sums = StepSums()
    for _ in range(count):
        t0 = time.perf_counter()
        try:
            inputs, target = next(batches)
        except StopIteration:
            break
        t1 = time.perf_counter()
        samples = int(target.shape[0])
        step((inputs, target))
        del inputs, target  # a worker's batch pins shared memory until its last reference goes
        sums.add(samples=samples, seconds=time.perf_counter() - t0, wait=t1 - t0)
    return sums


def steady_steps(batches: Iterator[Any], step: Callable[[Any], None], warmup: int, count: int) -> StepSums:
    """`count` steps after `warmup` untimed ones: worker start-up and the batches prefetched while it
    ran would otherwise hide a loader slower than the step."""
    timed_steps(batches, step, warmup)
    return timed_steps(batches, step, count)
