"""A checkpoint volume that fills up (a real 64 KiB tmpfs) or turns read-only (the tmpfs remounted ro):
the gang exits 73 with one clear line and the termination message, and the checkpoint written before it
still loads.

The tmpfs needs root (mount); the tests skip otherwise.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from torchjob_core import constants
from torchjob_trainer import checkpoint
from torchrun.trainer_procs import LAUNCH, running, trainer_env

# An mlp on 3x3 images writes ~42 KB checkpoints (weights and momentum): the first fits in 64 KiB, the
# second cannot (the first is kept until the second is complete).
TMPFS_SIZE = "64k"
EVERY, STEPS = 5, 20


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mounts a tmpfs of the given size as the checkpoint volume; unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs as the checkpoint volume")
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        where = tmp_path / "ckpt"
        where.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (no CAP_SYS_ADMIN?): {done.stderr.strip()}")
        mounted.append(where)
        return where

    try:
        yield mount
    finally:
        for where in mounted:
            subprocess.run(["umount", "-l", str(where)], check=False)


def _cmd(steps: int = STEPS) -> list[str]:
    cmd = [LAUNCH, "--standalone", "--nproc-per-node", "2", "--", "torchjob-train"]
    cmd += ["--model", "mlp", "--image-size", "3", "--batch-size", "8", "--dataset-size", "512"]
    return [*cmd, "--steps-per-epoch", str(steps), "--epochs", "1", "--checkpoint-every", str(EVERY)]


def _env(volume: Path, message_file: Path) -> dict[str, str]:
    message_file.touch()  # the kubelet provides it in a pod; the trainer never creates it
    return trainer_env(
        TORCHJOB_CHECKPOINT_DIR=str(volume),
        TORCHJOB_TERMINATION_LOG=str(message_file),
        TORCHJOB_METRICS_PORT="0",
        TORCHJOB_NUM_WORKERS="0",
    )


def _assert_failed_clearly(rc: int, output: str, clear: str, message_file: Path) -> None:
    assert rc == constants.EXIT_CHECKPOINT_WRITE_FAILED == 73, output[-4000:]
    lines = [line for line in output.splitlines() if clear in line]
    assert len(lines) == 1, output[-4000:]  # rank 0 says it once; its peer stops without a second line
    assert "Traceback" not in output, output[-4000:]
    assert "failed with exit code 73 (a checkpoint could not be written" in output  # the launcher's line
    assert message_file.read_text().startswith(clear)


def _assert_only_checkpoint(volume: Path, step: int) -> None:
    """The earlier checkpoint is intact and alone: the failed write's temp file was removed."""
    assert sorted(p.name for p in volume.iterdir()) == [checkpoint.checkpoint_path(volume, step).name]
    payload = checkpoint.load_latest(volume)
    assert payload is not None
    assert (payload["global_step"], payload["epoch"], payload["step_in_epoch"]) == (step, 0, step)


def test_a_full_checkpoint_volume_exits_73_and_keeps_the_previous_checkpoint(
    tmp_path: Path, tmpfs: Callable[[str], Path]
) -> None:
    tiny_volume = tmpfs(TMPFS_SIZE)
    message_file = tmp_path / "termination-log"
    with running(_cmd(), _env(tiny_volume, message_file), tmp_path / "run.log") as proc:
        rc = proc.wait(timeout=240)
        output = proc.output()
    clear = f"cannot write a checkpoint to {tiny_volume}: No space left on device (ENOSPC)"
    _assert_failed_clearly(rc, output, clear, message_file)
    _assert_only_checkpoint(tiny_volume, EVERY)


def test_a_read_only_checkpoint_volume_exits_73_and_keeps_the_previous_checkpoint(
    tmp_path: Path, tmpfs: Callable[[str], Path]
) -> None:
    tiny_volume = tmpfs("1m")  # room to write, until it turns read-only
    message_file = tmp_path / "termination-log"
    env = _env(tiny_volume, message_file)
    # A first run ends after EVERY steps with its checkpoint; then the volume turns read-only.
    with running(_cmd(steps=EVERY), env, tmp_path / "first.log") as proc:
        rc = proc.wait(timeout=240)
        first = proc.output()
    assert rc == 0, first[-4000:]
    remount = ["mount", "-o", "remount,ro", str(tiny_volume)]
    subprocess.run(remount, check=True, capture_output=True)
    # The second resumes from it (reading works) and fails at its next save.
    with running(_cmd(), env, tmp_path / "second.log") as proc:
        rc = proc.wait(timeout=240)
        output = proc.output()
    assert f"global step {EVERY}" in output, output[-4000:]  # resumed
    clear = f"cannot write a checkpoint to {tiny_volume}: Read-only file system (EROFS)"
    _assert_failed_clearly(rc, output, clear, message_file)
    _assert_only_checkpoint(tiny_volume, EVERY)
