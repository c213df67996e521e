"""The slot hand-over (data/slots.py): real DataLoader workers put batches in shared slots they reuse,
the training process copies each out. Batches are what in-process loading gives, none changes when its
slot is reused, and whatever does not fit goes torch's way."""

from __future__ import annotations

import gc

import pytest
import torch
from torch.utils.data import Dataset
from torchjob_trainer.config import TrainerConfig
from torchjob_trainer.data import slots
from torchjob_trainer.data.loader import TunedDataLoader, make_loader, resolve_settings
from torchjob_trainer.data.probe import _as_is, _ReadyBatches

BATCH = 4


class Images(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Batched fetch as the trainer's datasets do it; `grow` makes every batch after the first larger."""

    def __init__(self, n: int = 96, *, grow: bool = False, as_dict: bool = False) -> None:
        self.n, self.grow, self.as_dict = n, grow, as_dict

    def __len__(self) -> int:
        return self.n

    def __getitems__(self, indices: list[int]) -> object:
        side = 4 + (8 * (indices[0] // BATCH) if self.grow else 0)  # past the page a slot rounds to
        images = torch.stack([torch.full((3, side, side), float(i)) for i in indices])
        labels = torch.tensor(indices, dtype=torch.int64)
        if self.as_dict:
            return ({"image": images, "label": labels, "name": f"batch-{indices[0]}"},)
        return images, labels

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


def load(dataset: Dataset[object], **config: object) -> list[object]:
    settings = resolve_settings(TrainerConfig(**config), local_world_size=1, cuda=False)  # type: ignore[arg-type]
    return list(make_loader(dataset, None, BATCH, settings))


def expected_labels(n: int) -> list[list[int]]:
    return [list(range(i, i + BATCH)) for i in range(0, n, BATCH)]


def test_batches_through_reused_slots_are_the_data_and_none_changes_later() -> None:
    batches = load(Images(), num_workers=2, prefetch_factor=2)  # 24 batches through 2 slots per worker
    assert [b[1].tolist() for b in batches] == expected_labels(96)  # type: ignore[index]
    for images, labels in batches:  # type: ignore[misc]
        assert torch.equal(images, labels.float().view(-1, 1, 1, 1).expand(-1, 3, 4, 4))
        assert not images.is_shared() and not labels.is_shared()  # copied out, not torch's shm files


def test_dicts_and_plain_values_come_through() -> None:
    batches = load(Images(as_dict=True), num_workers=2)
    assert [b[0]["name"] for b in batches] == [f"batch-{i}" for i in range(0, 96, BATCH)]  # type: ignore[index]
    assert [b[0]["label"].tolist() for b in batches] == expected_labels(96)  # type: ignore[index]


def test_a_batch_larger_than_its_slot_goes_torchs_way() -> None:
    batches = load(Images(n=32, grow=True), num_workers=1)
    sides = [b[0].shape[-1] for b in batches]  # type: ignore[index]
    assert sides == [4 + 8 * i for i in range(8)]
    assert [b[0].is_shared() for b in batches] == [False] + [True] * 7  # type: ignore[index]
    for images, labels in batches:  # type: ignore[misc]
        assert torch.equal(images[:, 0, 0, 0], labels.float())


def test_off_by_config_every_batch_goes_torchs_way() -> None:
    batches = load(Images(n=32), num_workers=1, loader_slots=False)
    assert all(b[0].is_shared() for b in batches)  # type: ignore[index]


def test_the_rings_go_with_their_iterator() -> None:
    before = set(slots._rings)
    load(Images(n=16), num_workers=1, persistent_workers=False)
    gc.collect()
    assert set(slots._rings) == before


def test_layout_aligns_each_tensor_and_rebuilds_fresh_tensors() -> None:
    batch = (torch.arange(3, dtype=torch.int8), {"x": torch.ones(2, 2, dtype=torch.float64), "n": 7})
    layout, placed, nbytes = slots.lay_out(batch)
    assert [leaf.offset for leaf, _ in placed] == [0, 64]
    assert nbytes == 64 + 4 * 8 and len(placed) == 2
    block = torch.zeros(2 * 128, dtype=torch.uint8)
    for leaf, tensor in placed:
        slots.view_of(block, 128, leaf).copy_(tensor)
    out = slots.rebuild(layout, block, 128)
    assert torch.equal(out[0], batch[0]) and torch.equal(out[1]["x"], batch[1]["x"]) and out[1]["n"] == 7
    block.zero_()
    assert out[0].tolist() == [0, 1, 2]  # not a view of the block


class Tagged(torch.Tensor):
    """A tensor subclass, as torchvision's tv_tensors are."""


@pytest.mark.parametrize(
    "tensor",
    [
        torch.ones(2, requires_grad=True),
        torch.ones(2).to_sparse(),
        torch.ones(2).as_subclass(Tagged),
    ],
    ids=["autograd", "sparse", "subclass"],
)
def test_tensors_a_slot_cannot_hold_stay_in_the_layout(tensor: torch.Tensor) -> None:
    layout, placed, _ = slots.lay_out((tensor,))
    assert placed == [] and layout[0] is tensor


def test_workers_that_are_not_forked_from_the_training_process_use_slots_too() -> None:
    """Python 3.14 starts DataLoader workers by forkserver on Linux: the semaphores travel with the
    collate_fn as the worker starts."""
    batch = (torch.arange(12, dtype=torch.float32).view(3, 4), torch.arange(3))
    loader = TunedDataLoader(
        _ReadyBatches(batch, 6),
        batch_size=None,
        num_workers=1,
        collate_fn=slots.SlotCollate(_as_is, 2),
        multiprocessing_context="forkserver",
    )
    got = list(loader)
    assert len(got) == 6
    assert all(torch.equal(b[0], batch[0]) and not b[0].is_shared() for b in got)


@pytest.mark.gpu
def test_a_pinning_loader_gets_its_batches_copied_straight_into_pinned_memory() -> None:
    batches = load(Images(n=32), num_workers=1, pin_memory=True)
    assert all(b[0].is_pinned() and b[1].is_pinned() for b in batches)  # type: ignore[index]
    assert [b[1].tolist() for b in batches] == expected_labels(32)  # type: ignore[index]
