"""Elastic training (torchrun --nnodes 1:2): a node is lost mid-run. The other re-forms the worker group,
resumes from the shared checkpoint and finishes, alone or with a replacement node that joins later."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from harness.polling import eventually
from harness.ports import free_port
from torchrun.trainer_procs import LAUNCH, listening, read_summary, running, trainer_env

STEPS, EVERY = 120, 5


@pytest.mark.parametrize("replaced", [False, True], ids=["goes-on-alone", "replacement-joins"])
def test_elastic_run_survives_losing_a_node(tmp_path: Path, replaced: bool) -> None:
    rdzv = free_port()
    shared = tmp_path / "checkpoints"  # one volume both nodes mount (ReadWriteMany in a cluster)
    summary_file = tmp_path / "summary.json"
    env = trainer_env(
        # What the operator renders for an elastic job (minNodes 1, maxNodes 2); the shorter last call
        # only keeps the test quick: after reaching minNodes, torchrun waits that long for more nodes.
        PET_NNODES="1:2",
        PET_NPROC_PER_NODE="1",
        PET_RDZV_BACKEND="c10d",
        PET_RDZV_ENDPOINT=f"127.0.0.1:{rdzv}",
        PET_RDZV_ID="elastic-loss",
        PET_RDZV_CONF="last_call_timeout=10",
        PET_MAX_RESTARTS="3",
        TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1",
        TORCHJOB_METRICS_PORT="0",
        TORCHJOB_NUM_WORKERS="0",
        TORCHJOB_CHECKPOINT_DIR=str(shared),
        TORCHJOB_SUMMARY_FILE=str(summary_file),
    )
    # 16 samples of 3 ms each: about 50 ms a step, so the run is still going when node 1 is lost.
    cmd = [LAUNCH, "--", "torchjob-train", "--steps-per-epoch", str(STEPS), "--batch-size", "16"]
    cmd += ["--sample-cost-us", "3000", "--checkpoint-every", str(EVERY)]
    # Node 0 comes first, so it hosts the c10d rendezvous store, as node 0's pod does in a cluster.
    with running(cmd, env, tmp_path / "node-0.log") as node0:
        eventually(lambda: listening(rdzv), 60, "node 0 hosting the rendezvous store", watch=node0)
        with running(cmd, env, tmp_path / "node-1.log") as node1:
            eventually(lambda: len(list(shared.glob("ckpt-*.pt"))) >= 2, 180, "two checkpoints", watch=node0)
            assert "world_size=2" in node0.output()
            node1.stop()  # the node is gone: its agent and worker are killed at once
        if replaced:
            # The operator's replacement pod: a fresh agent joining the re-forming group.
            with running(cmd, env, tmp_path / "node-1b.log") as node1b:
                rc = node0.wait(timeout=300)
                assert node1b.wait(timeout=120) == 0, node1b.output()[-4000:]
        else:
            rc = node0.wait(timeout=300)
        output = node0.output()
    assert rc == 0, output[-4000:]
    resumed = re.findall(r"resumed at epoch 0, step (\d+) of the epoch, global step (\d+)", output)
    assert resumed, output[-4000:]  # the restart picked up a checkpoint
    step, global_step = (int(n) for n in resumed[-1])
    assert global_step >= EVERY
    summary = read_summary(summary_file)
    assert summary["world_size"] == (2 if replaced else 1)
    # The epoch's position carries over in samples: alone, node 0 goes on from twice the step (half the
    # ranks); --steps-per-epoch then caps the epoch in the new world's steps.
    if not replaced:
        assert step == 2 * global_step
    assert summary["global_step"] == global_step + STEPS - step
