from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchjob_trainer import checkpoint
from torchjob_trainer.checkpoint import Position


def _save(directory: Path, step: int, keep: int = 5) -> Path:
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return checkpoint.save(
        directory,
        model_state=model.state_dict(),
        optimizer_state=opt.state_dict(),
        position=Position(epoch=step // 10, step_in_epoch=step % 10, global_step=step),
        keep=keep,
    )


def test_save_is_atomic_and_loadable(tmp_path: Path) -> None:
    path = _save(tmp_path, 7)
    assert path.name == "ckpt-000000007.pt"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left
    payload = checkpoint.load(path)
    assert checkpoint.position_of(payload) == Position(0, 7, 7)
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
