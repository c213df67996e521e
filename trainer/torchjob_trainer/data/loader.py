"""Build the DataLoader: resolved knobs, one sampler over the run's epochs, batched fetch, shm safety."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from torch.utils.data._utils.collate import default_collate
from torchjob_core import constants

from torchjob_trainer.config import TrainerConfig
from torchjob_trainer.data import cpu, shm, slots, workers

if TYPE_CHECKING:
    from torchjob_trainer.data.probe import FetchProbe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoaderSettings:
    """The DataLoader knobs, resolved (no `auto` left)."""

    num_workers: int
    pin_memory: bool
    persistent_workers: bool
    prefetch_factor: int
    sharing: str = workers.DEFAULT_SHARING
    slots: bool = True
    worker_nice: int = 0  # torch's own: workers as nice as the training process

    def batches_in_flight(self) -> int:
        """Batches the loader holds ready or in the making: a worker's start-up plus its prefetch."""
        return 1 + self.num_workers * self.prefetch_factor

    def describe(self) -> str:
        return (
            f"num_workers={self.num_workers} prefetch_factor={self.prefetch_factor} "
            f"pin_memory={self.pin_memory} persistent_workers={self.persistent_workers} "
            f"sharing={self.sharing} slots={self.slots} worker_nice={self.worker_nice}"
        )


def resolve_settings(
    config: TrainerConfig,
    *,
    local_world_size: int,
    cuda: bool,
    budget: cpu.CpuBudget | None = None,
    probe: FetchProbe | None = None,
) -> LoaderSettings:
    """Turn `auto` into numbers: in-process when the probe says batches are cheap, else workers from the
    cgroup CPU quota / processes per node; pinning on CUDA."""
    num_workers = config.num_workers
    if num_workers is None:
        budget = budget or cpu.cpu_budget(config.cpu_limit)
        num_workers = cpu.auto_num_workers(budget, local_world_size)
        if probe is not None and probe.cheap and num_workers > 0:
            log.info("num_workers=auto -> 0: %s; workers would only add IPC", probe.describe())
            num_workers = 0
        else:
            log.info(
                "num_workers=auto -> %d (%.2f CPUs from %s / %d processes per node, %g per CPU)%s",
                num_workers,
                budget.cpus,
                budget.source,
                local_world_size,
                constants.AUTO_WORKERS_PER_CPU,
                f"; {probe.describe()}" if probe is not None else "",
            )
    pin = cuda if config.pin_memory is None else config.pin_memory
    return LoaderSettings(
        num_workers,
        pin,
        config.persistent_workers,
        config.prefetch_factor,
        sharing=config.loader_sharing,
        slots=config.loader_slots,
        worker_nice=config.loader_worker_nice,
    )


class RunSampler(Sampler[int]):
    """Every remaining epoch's indices in one stream, so that one loader iterator serves the whole run.

    Each epoch is `inner`'s order for that epoch (a DistributedSampler: this rank's share, shuffled by
    seed and epoch) cut to `steps_per_epoch` batches; the first epoch starts after the batches a resumed
    checkpoint already trained. A loader iterator created per epoch starts prefetching the next epoch
    only at `iter()`, so its first batch waits for a whole batch fetch by one worker (3.5 steps measured,
    docs/benchmarks-dataloader.md); over one stream the workers fetch the next epoch's first batches
    while the current epoch's last steps train, and no prefetched batch is dropped at an epoch's cap.
    """

    def __init__(self, inner: DistributedSampler[Any], *, batch_size: int, epochs: int) -> None:
        self.inner, self.batch_size, self.epochs = inner, batch_size, epochs
        self.steps_per_epoch = len(inner) // batch_size
        self._epoch, self._skip_steps = 0, 0

    def cap_steps(self, steps_per_epoch: int) -> None:
        """Train at most `steps_per_epoch` batches of each epoch (--steps-per-epoch)."""
        self.steps_per_epoch = min(self.steps_per_epoch, steps_per_epoch)

    def start_at(self, epoch: int, step_in_epoch: int) -> None:
        """Where the next iteration starts: a checkpoint's position (or the start, 0 and 0)."""
        self._epoch, self._skip_steps = epoch, step_in_epoch

    def epoch_indices(self, epoch: int) -> list[int]:
        self.inner.set_epoch(epoch)
        return list(self.inner)[: self.steps_per_epoch * self.batch_size]

    def __iter__(self) -> Iterator[int]:
        for epoch in range(self._epoch, self.epochs):
            skip = self._skip_steps * self.batch_size if epoch == self._epoch else 0
            yield from self.epoch_indices(epoch)[skip:]

    def __len__(self) -> int:
        epochs_left = max(0, self.epochs - self._epoch)
        return max(0, epochs_left * self.steps_per_epoch - self._skip_steps) * self.batch_size


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


def fetch_batch(dataset: Dataset[Any], indices: list[int]) -> Any:
    """One collated batch fetched in this process, the way a loader worker fetches it."""
    getitems = getattr(dataset, "__getitems__", None)
    raw = getitems(indices) if getitems is not None else [dataset[i] for i in indices]
    return collate(raw)


def measure_batch_bytes(dataset: Dataset[Any], batch_size: int) -> int:
    """Bytes of one collated batch, fetched in this process (what one in-flight batch costs in shm)."""
    n = min(batch_size, len(dataset))  # type: ignore[arg-type]
    return batch_nbytes(fetch_batch(dataset, list(range(n))))


class TunedDataLoader(DataLoader[Any]):
    """A DataLoader whose worker iterators `workers.end_workers` can end, and that does not warn about
    more workers than CPUs: `auto` and autotune oversubscribe on purpose (cpu.auto_num_workers), and
    torch would warn at every epoch."""

    def check_worker_number_rationality(self) -> None:
        return None

    def _get_iterator(self) -> Any:
        collate_fn = self.collate_fn
        if not (self.num_workers > 0 and isinstance(collate_fn, slots.SlotCollate)):
            return workers.track(super()._get_iterator())
        context = self.multiprocessing_context or torch.multiprocessing.get_context()
        pinned = self.pin_memory and torch.cuda.is_available()  # what the loader's pin thread does
        key = collate_fn.arm(self.num_workers, context, pinned=pinned)
        iterator = super()._get_iterator()
        slots.forget_with(iterator, key)
        return workers.track(iterator)


def collate_for(settings: LoaderSettings) -> Any:
    """Our collate, into reused slots when workers hand batches over through them (data/slots.py)."""
    if settings.slots and settings.num_workers > 0:
        return slots.SlotCollate(collate, settings.prefetch_factor)
    return collate


def make_loader(
    dataset: Dataset[Any], sampler: Any, batch_size: int, settings: LoaderSettings, *, seed: int = 0
) -> DataLoader[Any]:
    extra: dict[str, Any] = {}
    if settings.num_workers > 0:
        extra = {
            "prefetch_factor": settings.prefetch_factor,
            "persistent_workers": settings.persistent_workers,
        }
    gen = torch.Generator().manual_seed(seed)
    return TunedDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=settings.num_workers,
        pin_memory=settings.pin_memory,
        collate_fn=collate_for(settings),
        worker_init_fn=workers.WorkerInit(settings.sharing, settings.worker_nice),
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
