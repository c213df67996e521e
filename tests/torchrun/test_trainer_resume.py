"""SIGTERM to the launcher (what the kubelet does): checkpoint, exit 143; a restart resumes at that step."""

from __future__ import annotations

import signal
from pathlib import Path

from harness.polling import eventually
from torchjob_trainer import checkpoint
from torchrun.trainer_procs import LAUNCH, progress_lines, read_summary, running, trainer_env

BATCH, STEPS_PER_EPOCH, EPOCHS = 16, 60, 2


def _cmd() -> list[str]:
    cmd = [LAUNCH, "--standalone", "--nproc-per-node", "2", "--", "torchjob-train"]
    cmd += ["--batch-size", str(BATCH), "--steps-per-epoch", str(STEPS_PER_EPOCH), "--epochs", str(EPOCHS)]
    return [*cmd, "--sample-cost-us", "1500", "--log-every", "5", "--checkpoint-every", "1000"]


def test_sigterm_checkpoints_and_restart_resumes(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    summary_file = tmp_path / "summary.json"
    env = trainer_env(
        TORCHJOB_CHECKPOINT_DIR=str(ckpt),
        TORCHJOB_SUMMARY_FILE=str(summary_file),
        TORCHJOB_METRICS_PORT="0",
        TORCHJOB_NUM_WORKERS="1",
        TORCHJOB_PREEMPTION_GRACE_SECONDS="20",
    )
    with running(_cmd(), env, tmp_path / "first.log") as proc:
        # Stop mid-way through the first epoch, well before its end-of-epoch checkpoint.
        eventually(
            lambda: any(p["step"] >= 10 for p in progress_lines(proc.output())), 180, "step 10", watch=proc
        )
        proc.popen.send_signal(signal.SIGTERM)  # the launcher only, as a pod's PID 1 gets it
        rc = proc.wait(timeout=60)
        first_output = proc.output()
    assert rc == 143, first_output[-4000:]
    first = read_summary(summary_file)
    assert first["outcome"] == "preempted"
    stopped_at = first["global_step"]
    assert 10 <= stopped_at < STEPS_PER_EPOCH
    saved = checkpoint.list_checkpoints(ckpt)
    assert [step for step, _ in saved] == [stopped_at]
    payload = checkpoint.load(saved[0][1])
    assert (payload["epoch"], payload["step_in_epoch"]) == (0, stopped_at)

    summary_file.unlink()
    with running(_cmd(), env, tmp_path / "second.log") as proc:
        rc = proc.wait(timeout=240)
        second_output = proc.output()
    assert rc == 0, second_output[-4000:]
    assert f"global step {stopped_at}" in second_output
    second = read_summary(summary_file)
    total = STEPS_PER_EPOCH * EPOCHS
    assert second["outcome"] == "completed"
    assert second["global_step"] == total
    # Only the remaining steps ran: the sampler resumed mid-epoch instead of starting over.
    assert [r["steps"] for r in second["ranks"]] == [total - stopped_at] * 2
    assert progress_lines(second_output)[0]["step"] > stopped_at
