"""Batches handed over through shared slots that each worker reuses, not a new shm file per tensor.

Torch hands every tensor of every batch over as a fresh shared-memory file: the worker creates and
registers it; the training process opens and maps it, then unmaps and unlinks it when the batch is
freed (about 0.5 ms of the training process's CPU per batch of two tensors on 2 cores,
docs/benchmarks-dataloader.md). Here each worker owns a ring of `count` slots in one shared block,
made at its first batch and sent once, with that batch. The worker collates into its next free slot
and sends a small token (where each tensor lies); the training process, unpickling the token, copies
the batch out into fresh tensors and frees the slot. The copy is what makes reuse safe: no tensor the
user holds aliases a slot.

A counting semaphore per worker, made before the workers start, counts its free slots. One worker's
batches arrive in the order it made them, so slots are freed in the order they were filled, and the
free ones are always the next in the ring. A batch that does not fit its slot, or that finds no free
slot, goes torch's way; so does anything in a batch that is not a CPU tensor, inside the token.
"""

from __future__ import annotations

import math
import multiprocessing.util
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import get_worker_info

ALIGN_BYTES = 64
PAGE_BYTES = 4096


@dataclass(frozen=True)
class Leaf:
    """Where one tensor of a batch lies in its slot."""

    offset: int
    dtype: torch.dtype
    shape: tuple[int, ...]


@dataclass
class _Ring:
    """One worker's slots, as the training process sees them."""

    free: Any  # a multiprocessing semaphore: the worker's free slots
    pinned: bool  # copy batches out into pinned memory (the loader pins for CUDA)
    block: torch.Tensor | None = None  # the worker's shared block, once its first token brought it


# Training process: each armed loader iterator's rings (one per worker), by the key its tokens carry.
_rings: dict[str, list[_Ring]] = {}


class SlotCollate:
    """A loader's collate_fn that puts each collated batch in the worker's next free slot."""

    def __init__(self, collate_fn: Any, count: int) -> None:
        self.collate_fn, self.count = collate_fn, max(1, count)
        self.key: str | None = None
        self.free: list[Any] = []
        # A worker's own state (each worker has its own copy of this object).
        self._block: torch.Tensor | None = None
        self._slot_bytes = 0
        self._next = 0
        self._block_sent = False

    def arm(self, num_workers: int, context: Any, *, pinned: bool = False) -> str:
        """In the training process, before a loader iterator starts its workers: their semaphores, and
        the key their tokens find them by (`forget_with`). `pinned`: the loader pins its batches, so the
        copy out of a slot goes straight to pinned memory, and pinning finds nothing left to copy."""
        self.key = uuid.uuid4().hex
        self.free = [context.BoundedSemaphore(self.count) for _ in range(num_workers)]
        self._block, self._next, self._block_sent = None, 0, False
        _rings[self.key] = [_Ring(free, pinned) for free in self.free]
        return self.key

    def __call__(self, samples: Any) -> Any:
        batch = self.collate_fn(samples)
        info = get_worker_info()
        if info is None or self.key is None:
            return batch
        return self._into_slot(batch, info.id)

    def _into_slot(self, batch: Any, worker: int) -> Any:
        layout, placed, nbytes = lay_out(batch)
        if not placed:
            return batch
        block = self._block if self._block is not None else self._make_block(nbytes)
        if nbytes > self._slot_bytes or not self.free[worker].acquire(block=False):
            return batch
        base = self._next * self._slot_bytes
        self._next = (self._next + 1) % self.count
        for leaf, tensor in placed:
            view_of(block, base, leaf).copy_(tensor)
        first = not self._block_sent
        self._block_sent = True
        return SlotToken(self.key or "", worker, base, layout, block if first else None)

    def _make_block(self, nbytes: int) -> torch.Tensor:
        self._slot_bytes = -(-nbytes // PAGE_BYTES) * PAGE_BYTES
        block = torch.empty(self.count * self._slot_bytes, dtype=torch.uint8)
        self._block = block.share_memory_()  # type: ignore[no-untyped-call]
        # A worker leaves through os._exit, where nothing is freed, and under `file_system` a shm file is
        # unlinked when its last holder lets go: drop the worker's hold at its exit (multiprocessing runs
        # these finalizers there), so that the block goes as soon as the training process drops it too.
        multiprocessing.util.Finalize(self, self._drop_block, exitpriority=10)
        return block

    def _drop_block(self) -> None:
        self._block = None


class SlotToken:
    """What a worker sends for a batch in a slot; unpickled in the training process, it is the batch."""

    def __init__(self, key: str, worker: int, base: int, layout: Any, block: torch.Tensor | None) -> None:
        self.args = (key, worker, base, layout, block)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return receive, self.args


def forget_with(iterator: object, key: str) -> None:
    """Drop the rings of `key` (and the worker blocks mapped here) once `iterator` is gone."""
    weakref.finalize(iterator, _rings.pop, key, None)


def receive(key: str, worker: int, base: int, layout: Any, block: torch.Tensor | None) -> Any:
    """The batch out of its slot, in fresh tensors; the slot is free again."""
    rings = _rings.get(key)
    if rings is None:
        raise RuntimeError(f"a loader batch arrived for an iterator that is gone (slots {key})")
    ring = rings[worker]
    if block is not None:
        ring.block = block
    if ring.block is None:
        raise RuntimeError(f"loader worker {worker}'s first batch never arrived (slots {key})")
    try:
        return rebuild(layout, ring.block, base, pinned=ring.pinned)
    finally:
        ring.free.release()


def map_batch(batch: Any, fn: Callable[[Any], Any]) -> Any:
    """`batch` with `fn` applied to everything in it but the lists, tuples and dicts it walks."""
    if type(batch) in (list, tuple):
        return type(batch)(map_batch(item, fn) for item in batch)
    if type(batch) is dict:
        return {k: map_batch(item, fn) for k, item in batch.items()}
    return fn(batch)


def lay_out(batch: Any) -> tuple[Any, list[tuple[Leaf, torch.Tensor]], int]:
    """`batch` with each tensor a slot can hold replaced by its Leaf; each Leaf with its tensor, in
    order; and the slot bytes used up to the end of the last one."""
    placed: list[tuple[Leaf, torch.Tensor]] = []
    end = 0

    def place(item: Any) -> Any:
        nonlocal end
        if not (isinstance(item, torch.Tensor) and fits_a_slot(item)):
            return item
        offset = -(-end // ALIGN_BYTES) * ALIGN_BYTES
        leaf = Leaf(offset, item.dtype, tuple(item.shape))
        placed.append((leaf, item))
        end = offset + item.numel() * item.element_size()
        return leaf

    return map_batch(batch, place), placed, end


def fits_a_slot(tensor: torch.Tensor) -> bool:
    """Plain dense CPU tensors only: a subclass (a torchvision tv_tensor) would come back a plain tensor,
    and a quantized, sparse, nested or autograd one is not just its bytes."""
    return (
        type(tensor) is torch.Tensor
        and tensor.device.type == "cpu"
        and tensor.layout == torch.strided
        and not (tensor.requires_grad or tensor.is_quantized or tensor.is_nested)
    )


def rebuild(layout: Any, block: torch.Tensor, base: int, *, pinned: bool = False) -> Any:
    """The batch of `layout`, each tensor copied out of the slot at `base` into fresh memory."""

    def copy_out(item: Any) -> Any:
        if not isinstance(item, Leaf):
            return item
        view = view_of(block, base, item)
        if not pinned:
            return view.clone()
        return torch.empty(view.shape, dtype=view.dtype, pin_memory=True).copy_(view)

    return map_batch(layout, copy_out)


def view_of(block: torch.Tensor, base: int, leaf: Leaf) -> torch.Tensor:
    """The slot bytes of `leaf`, as a tensor of its dtype and shape."""
    start = base + leaf.offset
    nbytes = math.prod(leaf.shape) * leaf.dtype.itemsize
    return block[start : start + nbytes].view(leaf.dtype).view(leaf.shape)
