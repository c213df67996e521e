from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchjob_trainer import checkpoint
from torchjob_trainer.checkpoint import Position
from unit.checkpoints import save_linear


def _save(directory: Path, step: int, keep: int = 5) -> Path:
    position = Position(epoch=step // 10, step_in_epoch=step % 10, global_step=step)
    return save_linear(directory, position, keep=keep)


def test_save_is_atomic_and_loadable(tmp_path: Path) -> None:
    path = _save(tmp_path, 7)
    assert path.name == "ckpt-000000007.pt"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left
    payload = checkpoint.load(path)
    assert checkpoint.position_of(payload, world_size=1, batch_size=32) == Position(0, 7, 7)
    assert set(payload["model"]) == {"weight", "bias"}


def test_latest_valid_skips_corrupt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _save(tmp_path, 10)
    _save(tmp_path, 20)
    (tmp_path / "ckpt-000000030.pt").write_bytes(b"torn write")
    (tmp_path / "ckpt-000000040.pt.123.tmp").write_bytes(b"in progress")
    payload = checkpoint.load_latest(tmp_path)
    assert payload is not None
    assert payload["global_step"] == 20
    assert "skipping unreadable checkpoint" in caplog.text


def test_nothing_to_resume(tmp_path: Path) -> None:
    assert checkpoint.load_latest(tmp_path / "absent") is None
    (tmp_path / "ckpt-000000001.pt").write_bytes(b"")
    assert checkpoint.load_latest(tmp_path) is None


def test_keeps_only_the_newest(tmp_path: Path) -> None:
    for step in (1, 2, 3, 4):
        _save(tmp_path, step, keep=2)
    assert [s for s, _ in checkpoint.list_checkpoints(tmp_path)] == [4, 3]


def test_rejects_foreign_files(tmp_path: Path) -> None:
    torch.save({"weights": 1}, tmp_path / "ckpt-000000005.pt")
    with pytest.raises(ValueError, match="not a torchjob checkpoint"):
        checkpoint.load(tmp_path / "ckpt-000000005.pt")


@pytest.mark.parametrize(
    ("world", "batch", "step"),
    [(2, 16, 10), (1, 16, 20), (4, 16, 5), (3, 16, 6), (2, 32, 5), (1, 48, 6)],
)
def test_position_converts_through_samples_when_the_world_changes(world: int, batch: int, step: int) -> None:
    # 10 steps of 2 ranks x 16 = the first 320 samples of the epoch's shuffled order.
    payload = {
        "epoch": 1,
        "step_in_epoch": 10,
        "global_step": 40,
        "extra": {"world_size": 2, "batch_size": 16},
    }
    assert checkpoint.position_of(payload, world_size=world, batch_size=batch) == Position(1, step, 40)


def test_position_without_its_world_is_taken_as_is() -> None:
    payload = {"epoch": 0, "step_in_epoch": 3, "global_step": 3, "extra": {}}
    assert checkpoint.position_of(payload, world_size=8, batch_size=4) == Position(0, 3, 3)


def test_converted_position_skips_exactly_the_samples_already_trained() -> None:
    from torch.utils.data import DistributedSampler
    from torchjob_trainer.data.loader import RunSampler

    data = list(range(640))

    def order(world: int, rank: int, step: int = 0) -> list[int]:
        share = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, drop_last=True)
        sampler = RunSampler(share, batch_size=16, epochs=4)
        sampler.start_at(3, step)
        return list(sampler)

    trained = {i for rank in range(2) for i in order(2, rank)[: 10 * 16]}  # 10 steps on 2 ranks x 16
    payload = {
        "epoch": 3,
        "step_in_epoch": 10,
        "global_step": 10,
        "extra": {"world_size": 2, "batch_size": 16},
    }
    step = checkpoint.position_of(payload, world_size=1, batch_size=16).step_in_epoch
    rest = order(1, 0, step)
    assert trained.isdisjoint(rest) and trained | set(rest) == set(data)
