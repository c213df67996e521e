"""Elastic training (torchrun --nnodes MIN:MAX) with the env the operator renders: a node is lost mid-run
and the other re-forms the worker group, resumes from the shared checkpoint and finishes, alone or with a
replacement node that joins later; and torchrun's rendezvous runs with spec.elastic's timeouts, so a job
with fewer nodes than maxNodes does not wait torch's 30 s last call."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from harness.polling import eventually
from harness.ports import free_port
from torch.distributed.elastic.rendezvous import RendezvousParameters
from torch.distributed.elastic.rendezvous.dynamic_rendezvous import DynamicRendezvousHandler
from torch.distributed.elastic.rendezvous.registry import get_rendezvous_handler
from torch.distributed.run import config_from_args, parse_args
from torchjob_core import spec
from torchjob_core.render import env as renv
from torchrun.trainer_procs import LAUNCH, listening, read_summary, running, trainer_env

STEPS, EVERY = 120, 5


def elastic_job(name: str, nodes: int, **elastic: Any) -> spec.TrainingJob:
    manifest = {
        "apiVersion": "torchjob.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {"image": "unused", "nodes": nodes, "elastic": {"minNodes": 1, "maxNodes": 2, **elastic}},
    }
    return spec.load(manifest)


def rendezvous_env(job: spec.TrainingJob, node: int, rdzv: int) -> dict[str, str]:
    """torchrun's env for node `node`, as the operator renders it, with node 0's store on 127.0.0.1."""
    return {
        str(e["name"]): str(e["value"])
        for e in renv.torchrun_env(job, node, master_addr="127.0.0.1", rdzv_port=rdzv)
    }


@pytest.mark.parametrize("replaced", [False, True], ids=["goes-on-alone", "replacement-joins"])
def test_elastic_run_survives_losing_a_node(tmp_path: Path, replaced: bool) -> None:
    rdzv = free_port()
    shared = tmp_path / "checkpoints"  # one volume both nodes mount (ReadWriteMany in a cluster)
    summary_file = tmp_path / "summary.json"
    # A 10 s last call rather than the default 5 s: node 1's agent starts only once node 0 hosts the
    # store, and importing torch on a loaded machine may take longer than 5 s.
    job = elastic_job("elastic-loss", 2, lastCallTimeoutSeconds=10)
    settings = {
        "TORCHJOB_METRICS_PORT": "0",
        "TORCHJOB_NUM_WORKERS": "0",
        "TORCHJOB_CHECKPOINT_DIR": str(shared),
        "TORCHJOB_SUMMARY_FILE": str(summary_file),
    }
    env0, env1 = (trainer_env(**rendezvous_env(job, node, rdzv), **settings) for node in (0, 1))
    # 16 samples of 3 ms each: about 50 ms a step, so the run is still going when node 1 is lost.
    cmd = [LAUNCH, "--", "torchjob-train", "--steps-per-epoch", str(STEPS), "--batch-size", "16"]
    cmd += ["--sample-cost-us", "3000", "--checkpoint-every", str(EVERY)]
    # Node 0 comes first and hosts the c10d rendezvous store (is_host=1), as node 0's pod does in a cluster.
    with running(cmd, env0, tmp_path / "node-0.log") as node0:
        eventually(lambda: listening(rdzv), 60, "node 0 hosting the rendezvous store", watch=node0)
        with running(cmd, env1, tmp_path / "node-1.log") as node1:
            eventually(lambda: len(list(shared.glob("ckpt-*.pt"))) >= 2, 180, "two checkpoints", watch=node0)
            assert "world_size=2" in node0.output()
            node1.stop()  # the node is gone: its agent and worker are killed at once
        if replaced:
            # The operator's replacement pod for node 1: a fresh agent joining the re-forming group.
            with running(cmd, env1, tmp_path / "node-1b.log") as node1b:
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


@pytest.mark.parametrize(
    ("elastic", "last_call", "join"),
    [({}, 5, 600), ({"lastCallTimeoutSeconds": 2, "joinTimeoutSeconds": 120}, 2, 120)],
    ids=["defaults", "set"],
)
def test_torchruns_rendezvous_takes_the_rendered_timeouts(
    monkeypatch: pytest.MonkeyPatch, elastic: dict[str, Any], last_call: int, join: int
) -> None:
    """torch's own flag parsing and c10d handler, fed the rendered PET_* env: the keys are the ones it
    reads (an unknown key would be ignored silently and torch's 30 s last call would stand)."""
    job = elastic_job("elastic-timeouts", 1, **elastic)  # nodes 1 < maxNodes 2: every round has a last call
    for name, value in rendezvous_env(job, 0, free_port()).items():
        monkeypatch.setenv(name, value)
    config, _, _ = config_from_args(parse_args(["true"]))  # type: ignore[no-untyped-call]
    params = RendezvousParameters(
        config.rdzv_backend,
        config.rdzv_endpoint,
        config.run_id,
        config.min_nodes,
        config.max_nodes,
        config.local_addr,
        **config.rdzv_configs,
    )
    handler = get_rendezvous_handler(params)  # hosts the store here (is_host=1)
    try:
        assert isinstance(handler, DynamicRendezvousHandler)
        timeout = handler.settings.timeout
        assert (timeout.last_call, timeout.join) == (timedelta(seconds=last_call), timedelta(seconds=join))
        assert (handler.settings.min_nodes, handler.settings.max_nodes) == (1, 2)
    finally:
        handler.shutdown()


def test_an_elastic_job_below_max_nodes_trains_with_the_rendered_rendezvous(tmp_path: Path) -> None:
    """nodes 1 < maxNodes 2, as rendered: the agent is launched with the spec's timeouts (the launch
    config torchrun logs), and the first round completes with the one node after its last call."""
    rdzv = free_port()
    summary_file = tmp_path / "summary.json"
    job = elastic_job("elastic-below-max", 1)
    env = trainer_env(
        **rendezvous_env(job, 0, rdzv),
        TORCHJOB_METRICS_PORT="0",
        TORCHJOB_NUM_WORKERS="0",
        TORCHJOB_CHECKPOINT_DIR=str(tmp_path / "checkpoints"),
        TORCHJOB_SUMMARY_FILE=str(summary_file),
        LOGLEVEL="INFO",  # torch's elastic loggers, as spec.debug sets it
    )
    cmd = [LAUNCH, "--", "torchjob-train", "--steps-per-epoch", "3", "--batch-size", "8"]
    with running(cmd, env, tmp_path / "node-0.log") as node0:
        rc = node0.wait(timeout=180)
        output = node0.output()
    assert rc == 0, output[-4000:]
    assert "'last_call_timeout': '5', 'join_timeout': '600'" in output, output[-4000:]
    # The first round (restart_count=0) completed with the one node, below maxNodes, without a retry.
    assert "restart_count=0" in output and "group_world_size=1" in output, output[-4000:]
    assert read_summary(summary_file)["world_size"] == 1
