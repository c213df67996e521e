"""A checkpoint volume that fills up (a real 64 KiB tmpfs): the gang exits 73 with one clear line and the
termination message, and the checkpoint written before it still loads.

The tmpfs needs root (mount); the test skips otherwise.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
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
def tiny_volume(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a 64 KiB tmpfs as the full checkpoint volume")
    mount = tmp_path / "ckpt"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (no CAP_SYS_ADMIN?): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _cmd() -> list[str]:
    cmd = [LAUNCH, "--standalone", "--nproc-per-node", "2", "--", "torchjob-train"]
    cmd += ["--model", "mlp", "--image-size", "3", "--batch-size", "8", "--dataset-size", "512"]
    return [*cmd, "--steps-per-epoch", str(STEPS), "--epochs", "1", "--checkpoint-every", str(EVERY)]


def test_a_full_checkpoint_volume_exits_73_and_keeps_the_previous_checkpoint(
    tmp_path: Path, tiny_volume: Path
) -> None:
    message_file = tmp_path / "termination-log"
    message_file.touch()  # the kubelet provides it in a pod; the trainer never creates it
    env = trainer_env(
        TORCHJOB_CHECKPOINT_DIR=str(tiny_volume),
        TORCHJOB_TERMINATION_LOG=str(message_file),
        TORCHJOB_METRICS_PORT="0",
        TORCHJOB_NUM_WORKERS="0",
    )
    with running(_cmd(), env, tmp_path / "run.log") as proc:
        rc = proc.wait(timeout=240)
        output = proc.output()
    assert rc == constants.EXIT_CHECKPOINT_WRITE_FAILED == 73, output[-4000:]

    clear = f"cannot write a checkpoint to {tiny_volume}: No space left on device (ENOSPC)"
    lines = [line for line in output.splitlines() if clear in line]
    assert len(lines) == 1, output[-4000:]  # rank 0 says it once; its peer stops without a second line
    assert "Traceback" not in output, output[-4000:]
    assert "failed with exit code 73 (a checkpoint could not be written" in output  # the launcher's line
    assert message_file.read_text().startswith(clear)

    # The earlier checkpoint is intact and alone: the failed write's temp file was removed.
    assert sorted(p.name for p in tiny_volume.iterdir()) == [
        checkpoint.checkpoint_path(tiny_volume, EVERY).name
    ]
    payload = checkpoint.load_latest(tiny_volume)
    assert payload is not None
    assert (payload["global_step"], payload["epoch"], payload["step_in_epoch"]) == (EVERY, 0, EVERY)
