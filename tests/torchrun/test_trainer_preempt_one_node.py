"""SIGTERM reaching one node only (one pod evicted) stops every rank at the same step; rank 0 saves."""

from __future__ import annotations

import signal
from pathlib import Path

from torchjob_trainer import checkpoint
from torchrun.trainer_procs import (
    LAUNCH,
    free_port,
    progress_lines,
    read_summary,
    running,
    two_node_env,
    wait_for,
)


def test_sigterm_on_the_node_without_rank_0(tmp_path: Path) -> None:
    rdzv = free_port()
    ckpt = tmp_path / "ckpt"
    summary_file = tmp_path / "summary.json"
    args = ["--steps-per-epoch", "100", "--batch-size", "16", "--sample-cost-us", "1500", "--log-every", "5"]

    def env() -> dict[str, str]:
        return two_node_env(
            rdzv,
            "preempt-one",
            TORCHJOB_METRICS_PORT="0",
            TORCHJOB_NUM_WORKERS="1",
            TORCHJOB_CHECKPOINT_DIR=str(ckpt),
            TORCHJOB_CHECKPOINT_EVERY="1000",
            TORCHJOB_SUMMARY_FILE=str(summary_file),
        )

    cmd = [LAUNCH, "--", "torchjob-train", *args]
    with (
        running(cmd, env(), tmp_path / "a.log") as a,
        running(cmd, env(), tmp_path / "b.log") as b,
    ):
        # Ranks are assigned at rendezvous: find the agent whose worker is rank 0.
        def rank0_agent() -> object:
            for agent in (a, b):
                if progress_lines(agent.output()):
                    return agent
            return None

        leader = wait_for(rank0_agent, 180, "the first progress line", a)
        other = b if leader is a else a
        wait_for(
            lambda: any(p["step"] >= 10 for p in progress_lines(leader.output())), 120, "step 10", leader
        )
        other.popen.send_signal(signal.SIGTERM)
        rcs = {"leader": leader.wait(timeout=90), "other": other.wait(timeout=90)}
        output = leader.output() + other.output()
    # The signalled launcher exits 128+15; the other one reports its worker's own 143.
    assert rcs == {"leader": 143, "other": 143}, output[-4000:]
    summary = read_summary(summary_file)
    assert summary["outcome"] == "preempted"
    steps = [r["steps"] for r in summary["ranks"]]
    assert steps[0] == steps[1] == summary["global_step"]
    saved = checkpoint.list_checkpoints(ckpt)
    assert [s for s, _ in saved] == [summary["global_step"]]
