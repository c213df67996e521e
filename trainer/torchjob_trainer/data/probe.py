"""A short start-up probe: is a batch cheaper to fetch in this process than to receive from a worker?

A DataLoader worker hands each batch over through shared memory: a slot it reuses, copied out in the
main process (`--loader-slots`, data/slots.py), or else a new segment per tensor, named or passed as a
file descriptor over a socket as `--loader-sharing` says, a mapping in the main process.
For in-memory data that hand-over costs more than fetching the batch in-process, and
`num_workers=auto` with workers ran at half the in-process speed (docs/benchmarks-dataloader.md). The
probe times both on the real dataset and batch shape, the hand-over as training's workers make it;
`auto` loads in-process when workers cannot win. It costs two in-process batches and a one-worker
loader handing a few ready batches over (about 0.1 s).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from torchjob_trainer.data import slots, workers
from torchjob_trainer.data.loader import TunedDataLoader, batch_nbytes, fetch_batch

HANDOFF_BATCHES = 6
# Workers must save at least half the fetch: the probe's hand-over leaves out what workers add beside it
# (their own fetch and the cores they take from the step). On in-memory data, where fetch and hand-over
# measured level (0.53-0.57 ms against 0.57-0.59 ms a batch), 1, 2 and 4 workers reached 0.90-0.97x
# `num_workers=0` and in-process loading 1.25x (docs/benchmarks-dataloader.md).
HANDOFF_MARGIN = 2.0


@dataclass(frozen=True)
class FetchProbe:
    batch_bytes: int
    fetch_seconds: float  # one batch fetched and collated in this process (the second, warm one)
    handoff_seconds: float | None  # one ready batch received from a worker; None when not measured

    @property
    def cheap(self) -> bool:
        """Workers cannot win: a hand-over would not save the main process half of what it fetches."""
        return (
            self.handoff_seconds is not None and self.fetch_seconds <= HANDOFF_MARGIN * self.handoff_seconds
        )

    def describe(self) -> str:
        handoff = "not measured" if self.handoff_seconds is None else f"{self.handoff_seconds * 1e3:.2f} ms"
        return (
            f"a batch of {self.batch_bytes} bytes takes {self.fetch_seconds * 1e3:.2f} ms to fetch "
            f"in-process, {handoff} to receive from a worker"
        )


def fresh_copy(batch: Any) -> Any:
    """A new copy of every tensor: each hand-over then allocates its own shared memory, as real batches do."""
    if isinstance(batch, torch.Tensor):
        return batch.clone()
    if isinstance(batch, (list, tuple)):
        return type(batch)(fresh_copy(b) for b in batch)
    if isinstance(batch, dict):
        return {k: fresh_copy(v) for k, v in batch.items()}
    return batch


class _ReadyBatches(Dataset[Any]):
    """Every item is a fresh copy of one collated batch: a worker that only hands batches over."""

    def __init__(self, batch: Any, count: int) -> None:
        self.batch = batch
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Any:
        return fresh_copy(self.batch)


def _as_is(item: Any) -> Any:
    return item


def handoff_seconds(
    batch: Any, sharing: str, batches: int = HANDOFF_BATCHES, *, use_slots: bool = True
) -> float:
    """Seconds per batch received from one worker that does nothing but hand it over, as training's do."""
    ready = _ReadyBatches(batch, batches + 1)
    prefetch = 2
    loader = TunedDataLoader(
        ready,
        batch_size=None,
        num_workers=1,
        collate_fn=slots.SlotCollate(_as_is, prefetch) if use_slots else _as_is,
        prefetch_factor=prefetch,
        worker_init_fn=workers.WorkerInit(sharing),
    )
    it = iter(loader)
    next(it)  # worker start-up
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    took = (time.perf_counter() - start) / batches
    del it
    return took


def probe_fetch(
    dataset: Dataset[Any],
    batch_size: int,
    *,
    handoff: bool = True,
    sharing: str = workers.DEFAULT_SHARING,
    use_slots: bool = True,
) -> FetchProbe:
    """Time one warm in-process batch (and, with `handoff`, one hand-over from a worker)."""
    n = min(batch_size, len(dataset))  # type: ignore[arg-type]
    fetch_batch(dataset, list(range(n)))  # lazy set-up (open files, first allocations) is not the steady cost
    second = list(range(n, 2 * n)) if 2 * n <= len(dataset) else list(range(n))  # type: ignore[arg-type]
    start = time.perf_counter()
    batch = fetch_batch(dataset, second)
    fetch = time.perf_counter() - start
    took = handoff_seconds(batch, sharing, use_slots=use_slots) if handoff else None
    return FetchProbe(batch_nbytes(batch), fetch, took)
