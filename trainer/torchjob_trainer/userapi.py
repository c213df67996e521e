"""The user-code protocol: `--user-entrypoint module:function` returns what to train.

The function takes the `TrainerConfig` and returns a `Workload` (or a 4-tuple in the same order).
Items of the dataset are `(inputs, target)`; the trainer calls `loss(model(inputs), target)`.
`optimizer` is an optimizer over the model's parameters, or a callable taking the parameters
(built after the model moved to its device). The trainer adds the sampler, the tuned DataLoader,
DDP, metrics, checkpoints and preemption handling.

    # my_pkg/train.py
    def build(config):
        model = MyNet()
        return Workload(model, MyDataset("/data"), torch.nn.CrossEntropyLoss(),
                        lambda params: torch.optim.AdamW(params, lr=config.lr))
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from torchjob_trainer.config import TrainerConfig

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


@dataclass
class Workload:
    model: nn.Module
    dataset: Dataset[Any]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer | OptimizerFactory


def load_entrypoint(spec: str) -> Callable[[TrainerConfig], Any]:
    module_name, _, func_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
        func = getattr(module, func_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(
            f"--user-entrypoint (TORCHJOB_USER_ENTRYPOINT): cannot load {spec!r}: {exc}"
        ) from exc
    if not callable(func):
        raise ValueError(f"--user-entrypoint (TORCHJOB_USER_ENTRYPOINT): {spec!r} is not callable")
    return func  # type: ignore[no-any-return]


def as_workload(value: Any) -> Workload:
    if isinstance(value, Workload):
        return value
    if isinstance(value, tuple) and len(value) == 4:
        return Workload(*value)
    raise TypeError(
        "--user-entrypoint (TORCHJOB_USER_ENTRYPOINT): must return a Workload or "
        f"(model, dataset, loss, optimizer), got {type(value).__name__}"
    )


def build_optimizer(workload: Workload) -> torch.optim.Optimizer:
    if isinstance(workload.optimizer, torch.optim.Optimizer):
        return workload.optimizer
    return workload.optimizer(workload.model.parameters())
