"""`promtool check metrics` on a real scrape of a training process."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness.ports import free_port
from torchrun.trainer_procs import running, scrape_while_training, trainer_env

PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="needs promtool (apt-get install prometheus)")
def test_trainer_metrics_pass_promtool(tmp_path: Path) -> None:
    port = free_port()
    env = trainer_env(TORCHJOB_METRICS_PORT=str(port), TORCHJOB_JOB_NAME="lint")
    cmd = [sys.executable, "-m", "torchjob_trainer", "--steps-per-epoch", "100", "--sample-cost-us", "300"]
    cmd += ["--batch-size", "16", "--num-workers", "1", "--checkpoint-dir", str(tmp_path / "ckpt")]
    cmd += ["--checkpoint-every", "2", "--log-every", "5"]
    with running(cmd, env, tmp_path / "out.log") as proc:
        text = scrape_while_training(port, proc)
        rc = proc.wait(timeout=180)
    assert rc == 0, proc.output()[-3000:]
    assert "torchjob_trainer_samples_total" in text
    lint = subprocess.run(
        [str(PROMTOOL), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert lint.stdout.strip() == "" and lint.stderr.strip() == "", lint.stdout + lint.stderr
