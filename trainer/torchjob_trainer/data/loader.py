"""Build the DataLoader: resolved knobs, a resumable DistributedSampler, batched fetch, shm safety."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torch.utils.data._utils.collate import default_collate

from torchjob_trainer.config import TrainerConfig
from torchjob_trainer.data import cpu, shm

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoaderSettings:
    """The DataLoader knobs, resolved (no `auto` left)."""

    num_workers: int
    pin_memory: bool
    persistent_workers: bool
    prefetch_factor: int

    def describe(self) -> str:
        return (
            f"num_workers={self.num_workers} prefetch_factor={self.prefetch_factor} "
            f"pin_memory={self.pin_memory} persistent_workers={self.persistent_workers}"
        )


def resolve_settings(
    config: TrainerConfig, *, local_world_size: int, cuda: bool, budget: cpu.CpuBudget | None = None
) -> LoaderSettings:
    """Turn `auto` into numbers: workers from the cgroup CPU quota / processes per node, pinning on CUDA."""
    workers = config.num_workers
    if workers is None:
        budget = budget or cpu.cpu_budget(config.cpu_limit)
        workers = cpu.auto_num_workers(budget, local_world_size)
        log.info(
            "num_workers=auto -> %d (%.2f CPUs from %s / %d processes per node)",
            workers,
            budget.cpus,
            budget.source,
            local_world_size,
        )
    pin = cuda if config.pin_memory is None else config.pin_memory
    return LoaderSettings(workers, pin, config.persistent_workers, config.prefetch_factor)


class ResumableDistributedSampler(DistributedSampler[Any]):
    """A DistributedSampler that can skip the batches already trained in the epoch being resumed."""

    def __init__(self, dataset: Dataset[Any], **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self._skip = 0

    def skip_next_epoch_start(self, samples: int) -> None:
        """Skip `samples` indices of the next iteration only (the sampler position of a checkpoint)."""
        self._skip = samples

    def __iter__(self) -> Iterator[Any]:
        indices = list(super().__iter__())
        skip, self._skip = self._skip, 0
        return iter(indices[skip:])

    def __len__(self) -> int:
        return max(0, self.num_samples - self._skip)


def collate(batch: Any) -> Any:
    """Pass through batches a dataset's `__getitems__` already collated; collate lists of samples."""
    if isinstance(batch, tuple):
        return batch
    return default_collate(batch)  # type: ignore[no-untyped-call]


def batch_nbytes(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.numel() * batch.element_size()
    if isinstance(batch, (list, tuple)):
        return sum(batch_nbytes(b) for b in batch)
    if isinstance(batch, dict):
        return sum(batch_nbytes(b) for b in batch.values())
    return 0


def measure_batch_bytes(dataset: Dataset[Any], batch_size: int) -> int:
    """Bytes of one collated batch, fetched in this process (what one in-flight batch costs in shm)."""
    n = min(batch_size, len(dataset))  # type: ignore[arg-type]
    getitems = getattr(dataset, "__getitems__", None)
    indices = list(range(n))
    raw = getitems(indices) if getitems is not None else [dataset[i] for i in indices]
    return batch_nbytes(collate(raw))


def ignore_sigterm(_worker_id: int) -> None:
    """DataLoader worker init: leave SIGTERM to the main process.

    torchrun signals a worker's whole process group on shutdown; a loader worker dying of it would make
    the main process fail the step it is finishing for its preemption checkpoint. Workers still exit
    when the main process shuts the loader down or dies.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(
    dataset: Dataset[Any], sampler: Any, batch_size: int, settings: LoaderSettings, *, seed: int = 0
) -> DataLoader[Any]:
    workers = settings.num_workers
    extra: dict[str, Any] = {}
    if workers > 0:
        extra = {
            "prefetch_factor": settings.prefetch_factor,
            "persistent_workers": settings.persistent_workers,
        }
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=settings.pin_memory,
        collate_fn=collate,
        worker_init_fn=ignore_sigterm,
        drop_last=True,
        generator=gen,
        **extra,
    )


def shm_safe(
    settings: LoaderSettings, *, batch_bytes: int, local_world_size: int, shm_path: str
) -> LoaderSettings:
    """Shrink the settings until the in-flight batches of every process on the node fit in shm."""
    plan = shm.plan_shm(
        num_workers=settings.num_workers,
        prefetch_factor=settings.prefetch_factor,
        batch_bytes=batch_bytes,
        local_world_size=local_world_size,
        available_bytes=shm.shm_available_bytes(shm_path),
    )
    shm.log_plan(plan, settings.num_workers, settings.prefetch_factor, shm_path)
    return replace(settings, num_workers=plan.num_workers, prefetch_factor=plan.prefetch_factor)
