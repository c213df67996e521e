"""The Trainer in one plain process (no process group): a step on its own, a full run, a preempted run."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torchjob_trainer import checkpoint
from torchjob_trainer.config import TrainerConfig
from torchjob_trainer.distributed import DistEnv
from torchjob_trainer.preemption import EXIT_PREEMPTED, Preemption
from torchjob_trainer.train import Trainer

ONE_PROCESS = DistEnv(rank=0, world_size=1, local_rank=0, local_world_size=1, node_rank=0)


def _trainer(tmp_path: Path, preemption: Preemption | None = None, **fields: object) -> Trainer:
    config = TrainerConfig(
        dataset_size=64,
        image_size=4,
        batch_size=8,
        steps_per_epoch=3,
        num_workers=0,
        metrics_port=0,
        checkpoint_dir=str(tmp_path / "ckpt"),
        summary_file=str(tmp_path / "summary.json"),
        **fields,  # type: ignore[arg-type]
    )
    return Trainer(config, ONE_PROCESS, torch.device("cpu"), preemption or Preemption(30))


def test_train_step_is_one_optimizer_step(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    inputs, target = next(iter(trainer.loader))
    loss = trainer.train_step(inputs, target)
    assert loss > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))
    assert trainer.global_step == 0  # the loop counts steps, not train_step


def test_train_runs_every_epoch_and_reports_one_set_of_totals(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, epochs=2)
    assert trainer.train() == 0
    report = json.loads((tmp_path / "summary.json").read_text())
    assert (report["outcome"], report["global_step"], report["total_steps"]) == ("completed", 6, 6)
    assert report["ranks"][0]["steps"] == 6
    assert report["samples"] == 6 * 8
    assert sorted(s for s, _ in checkpoint.list_checkpoints(tmp_path / "ckpt")) == [3, 6]


def test_a_requested_stop_checkpoints_after_the_step_and_exits_143(tmp_path: Path) -> None:
    preemption = Preemption(30)
    preemption.request()
    trainer = _trainer(tmp_path, preemption)
    assert trainer.train() == EXIT_PREEMPTED
    report = json.loads((tmp_path / "summary.json").read_text())
    assert (report["outcome"], report["global_step"]) == ("preempted", 1)
    resumed = _trainer(tmp_path)
    assert (resumed.epoch, resumed.step_in_epoch, resumed.global_step) == (0, 1, 1)
