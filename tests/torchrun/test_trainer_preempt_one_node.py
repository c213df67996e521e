"""SIGTERM reaching one node only (one pod evicted) stops every rank at the same step; rank 0 saves.

The evicted node may be the one that hosts the rendezvous store (node 0 in a cluster) while rank 0, which
saves, runs on the other: that launcher must still exit with its worker's 143, not a rendezvous error.
c10d ranks nodes by process id, so the test picks rank 0's node by which launcher starts first, and the
store's host by which one reaches the rendezvous first.
"""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

import pytest
from harness.polling import eventually
from harness.ports import free_port
from torchjob_trainer import checkpoint
from torchrun.trainer_procs import (
    LAUNCH,
    listening,
    progress_lines,
    read_summary,
    running,
    two_node_env,
)


@pytest.mark.parametrize("signalled", ["store host", "store client"])
def test_sigterm_on_the_node_without_rank_0(tmp_path: Path, signalled: str) -> None:
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
    gate = tmp_path / "gate"
    gated = ["sh", "-c", 'while [ ! -e "$0" ]; do sleep 0.1; done; exec "$@"', str(gate), *cmd]
    with contextlib.ExitStack() as stack:
        if signalled == "store host":  # the client starts first (lower pid: rank 0) but joins second
            client = stack.enter_context(running(gated, env(), tmp_path / "client.log"))
            host = stack.enter_context(running(cmd, env(), tmp_path / "host.log"))
        else:
            host = stack.enter_context(running(cmd, env(), tmp_path / "host.log"))
            client = stack.enter_context(running(gated, env(), tmp_path / "client.log"))
        eventually(lambda: listening(rdzv), 60, "the rendezvous store", watch=host)
        gate.touch()
        target, survivor = (host, client) if signalled == "store host" else (client, host)
        eventually(
            lambda: any(p["step"] >= 10 for p in progress_lines(survivor.output())),
            180,
            "step 10",
            watch=survivor,
        )
        target.popen.send_signal(signal.SIGTERM)
        rcs = {"signalled": target.wait(timeout=90), "other": survivor.wait(timeout=90)}
        output = host.output() + client.output()
        assert "rank 0/2" in survivor.output(), output[-4000:]
    # The signalled launcher exits 128+15; the other one reports its worker's own 143.
    assert rcs == {"signalled": 143, "other": 143}, output[-4000:]
    summary = read_summary(summary_file)
    assert summary["outcome"] == "preempted"
    steps = [r["steps"] for r in summary["ranks"]]
    assert steps[0] == steps[1] == summary["global_step"]
    saved = checkpoint.list_checkpoints(ckpt)
    assert [s for s, _ in saved] == [summary["global_step"]]
