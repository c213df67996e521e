"""SIGTERM reaching one node only (one pod evicted) stops every rank at the same step; rank 0 saves.

Either node may be the one evicted, including the one that hosts the rendezvous store (node 0 in a
cluster): the other launcher must still exit with its worker's 143, not with a rendezvous error.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from torchjob_trainer import checkpoint
from torchrun.trainer_procs import (
    LAUNCH,
    free_port,
    listening,
    progress_lines,
    read_summary,
    running,
    two_node_env,
    wait_for,
)


@pytest.mark.parametrize("signalled", ["store host", "store client"])
def test_sigterm_on_one_node_stops_every_rank(tmp_path: Path, signalled: str) -> None:
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
    with running(cmd, env(), tmp_path / "host.log") as host:
        # The first launcher up hosts the c10d store, as node 0 does in a cluster.
        wait_for(lambda: listening(rdzv), 60, "the rendezvous store", host)
        with running(cmd, env(), tmp_path / "client.log") as client:
            target, other = (host, client) if signalled == "store host" else (client, host)
            wait_for(
                lambda: any(p["step"] >= 10 for p in progress_lines(host.output() + client.output())),
                180,
                "step 10",
                host,
            )
            target.popen.send_signal(signal.SIGTERM)
            rcs = {"signalled": target.wait(timeout=90), "other": other.wait(timeout=90)}
            output = host.output() + client.output()
    # The signalled launcher exits 128+15; the other one reports its worker's own 143.
    assert rcs == {"signalled": 143, "other": 143}, output[-4000:]
    summary = read_summary(summary_file)
    assert summary["outcome"] == "preempted"
    steps = [r["steps"] for r in summary["ranks"]]
    assert steps[0] == steps[1] == summary["global_step"]
    saved = checkpoint.list_checkpoints(ckpt)
    assert [s for s, _ in saved] == [summary["global_step"]]
