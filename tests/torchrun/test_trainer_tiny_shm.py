"""A run with a 1 MiB /dev/shm completes: the loader shrinks to fit instead of dying with "Bus error"."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from torchrun.trainer_procs import LAUNCH, read_summary, running, trainer_env


def _can_mount_private_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /dev/shm"],
        capture_output=True,
        check=False,
        timeout=30,
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_private_tmpfs(), reason="needs root and mount namespaces (unshare -m)")
def test_tiny_dev_shm_run_completes(tmp_path: Path) -> None:
    summary_file = tmp_path / "summary.json"
    env = trainer_env(TORCHJOB_SUMMARY_FILE=str(summary_file), TORCHJOB_METRICS_PORT="0")
    # Batches of 16 x 3x32x32 float32 (~192 KiB): 2 workers x prefetch 4 would need ~1.7 MiB.
    train = ["torchjob-train", "--num-workers", "2", "--prefetch-factor", "4", "--batch-size", "16"]
    train += ["--steps-per-epoch", "40", "--epochs", "2", "--persistent-workers", "false"]
    launch = " ".join([LAUNCH, "--standalone", "--nproc-per-node", "1", "--", *train])
    # A private mount namespace: the 1 MiB tmpfs hides the real /dev/shm for this run only.
    cmd = ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs /dev/shm && exec {launch}"]
    with running(cmd, env, tmp_path / "out.log") as proc:
        rc = proc.wait(timeout=180)
        output = proc.output()
    assert rc == 0, output[-4000:]
    assert "shm /dev/shm too small for num_workers=2 prefetch_factor=4" in output
    summary = read_summary(summary_file)
    assert summary["dataloader"]["num_workers"] == 2
    assert summary["dataloader"]["prefetch_factor"] == 1
    assert summary["global_step"] == 80
