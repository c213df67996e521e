"""Built-in datasets: synthetic (CPU cost per sample), torchvision FakeData, MNIST/CIFAR-10 from a mount."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from torchjob_trainer.config import TrainerConfig

Sample = tuple[torch.Tensor, torch.Tensor]


def burn_cpu(microseconds: float) -> None:
    """Spin for `microseconds` of this thread's CPU time: stands in for image decode and augmentation.

    CPU time, not wall time: a spin that counts wall time finishes early when the scheduler preempts it,
    so with more workers than cores each sample cost less and oversubscription looked faster than it is.
    """
    if microseconds <= 0:
        return
    deadline = time.thread_time() + microseconds / 1e6
    x = 0
    while time.thread_time() < deadline:
        x += 1


class SyntheticDataset(Dataset[Sample]):
    """Deterministic random images and labels, with a configurable CPU cost per sample.

    `__getitems__` returns an already-collated batch `(inputs, targets)`: one generator call per batch
    instead of one per sample, and no per-sample stacking. The loader's collate passes such tuples
    through (see `loader.collate`).
    """

    def __init__(
        self, size: int, shape: tuple[int, ...], num_classes: int, sample_cost_us: float = 0.0, seed: int = 0
    ) -> None:
        self.size = size
        self.shape = shape
        self.num_classes = num_classes
        self.sample_cost_us = sample_cost_us
        self.seed = seed

    def __len__(self) -> int:
        return self.size

    def _target(self, index: int) -> int:
        return (index * 7 + self.seed) % self.num_classes

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.size:
            raise IndexError(index)
        burn_cpu(self.sample_cost_us)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        x = torch.randn(self.shape, generator=gen)
        return x, torch.tensor(self._target(index))

    def __getitems__(self, indices: list[int]) -> Sample:
        burn_cpu(self.sample_cost_us * len(indices))
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + (indices[0] if indices else 0))
        x = torch.randn((len(indices), *self.shape), generator=gen)
        y = torch.tensor([self._target(i) for i in indices])
        return x, y


def _vision(name: str, root: Path, cls: Any, transform: Any) -> Dataset[Any]:
    try:
        return cls(root=str(root), train=True, download=False, transform=transform)  # type: ignore[no-any-return]
    except RuntimeError as exc:
        raise FileNotFoundError(
            f"--dataset {name}: no dataset under --data-dir {root} (TORCHJOB_DATA_DIR); mount it there, "
            f"downloads are disabled ({exc})"
        ) from None


def build_dataset(config: TrainerConfig) -> Dataset[Any]:
    size = config.image_size
    if config.dataset == "synthetic":
        return SyntheticDataset(
            config.dataset_size, (3, size, size), config.num_classes, config.sample_cost_us, config.seed
        )
    if config.dataset == "jpeg":
        from torchjob_trainer.data.jpeg import JpegDataset  # noqa: PLC0415  (imports torchvision)

        return JpegDataset(config.dataset_size, size, config.num_classes, seed=config.seed)
    # torchvision is slow to import; only the vision datasets need it.
    import torchvision  # noqa: PLC0415
    from torchvision import transforms  # noqa: PLC0415

    if config.dataset == "fakedata":
        augment = transforms.Compose(
            [
                transforms.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
            ]
        )
        return torchvision.datasets.FakeData(  # type: ignore[no-any-return]
            size=config.dataset_size,
            image_size=(3, size + size // 8, size + size // 8),
            num_classes=config.num_classes,
            transform=augment,
            random_offset=config.seed,
        )
    root = Path(config.data_dir)
    if config.dataset == "mnist":
        tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
        return _vision("mnist", root, torchvision.datasets.MNIST, tf)
    tf = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)),
        ]
    )
    return _vision("cifar10", root, torchvision.datasets.CIFAR10, tf)
