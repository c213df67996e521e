"""Built-in datasets read a mounted path and never download."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
import torch
from torchjob_trainer.config import TrainerConfig
from torchjob_trainer.data.datasets import SyntheticDataset, build_dataset


def _write_idx(path: Path, magic: int, dims: tuple[int, ...], data: bytes) -> None:
    path.write_bytes(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + data)


def test_mnist_from_a_mounted_dir(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 6), ("t10k", 2)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", 2051, (n, 28, 28), bytes(n * 784))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", 2049, (n,), bytes(i % 10 for i in range(n)))
    ds = build_dataset(TrainerConfig(dataset="mnist", data_dir=str(tmp_path)))
    x, y = ds[3]
    assert x.shape == (1, 28, 28)
    assert y == 3


def test_missing_dataset_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        build_dataset(TrainerConfig(dataset="cifar10", data_dir=str(tmp_path)))


def test_fakedata_applies_real_transforms() -> None:
    ds = build_dataset(TrainerConfig(dataset="fakedata", dataset_size=4, image_size=16))
    x, _ = ds[0]
    assert x.shape == (3, 16, 16)
    assert x.dtype == torch.float32


def test_synthetic_is_deterministic_and_bounded() -> None:
    ds = SyntheticDataset(10, (2, 2), 3, seed=5)
    assert torch.equal(ds[4][0], ds[4][0])
    assert len(ds) == 10
    with pytest.raises(IndexError):
        ds[10]


def test_the_synthetic_sample_cost_is_cpu_time_not_wall_time() -> None:
    """A wall-clock spin finishes early when it is preempted: with more loader workers than cores each
    sample would cost less CPU than asked, and oversubscription would look faster than it is."""
    ds = SyntheticDataset(4, (3, 4, 4), 2, sample_cost_us=2000)
    start = time.thread_time()
    ds.__getitems__([0, 1])
    assert time.thread_time() - start >= 0.004
