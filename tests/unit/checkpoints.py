"""A real checkpoint of a small Linear model and its SGD state, for the trainer's checkpoint tests
(`keep` defaults to checkpoint.save's own 2)."""

from __future__ import annotations

from pathlib import Path

import torch
from torchjob_trainer import checkpoint
from torchjob_trainer.checkpoint import Position


def save_linear(directory: Path, position: Position, *, width: int = 2, keep: int = 2) -> Path:
    model = torch.nn.Linear(width, width)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return checkpoint.save(
        directory,
        model_state=model.state_dict(),
        optimizer_state=opt.state_dict(),
        position=position,
        keep=keep,
    )
