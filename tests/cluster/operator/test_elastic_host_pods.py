"""Elastic training end to end through the real API server: a node is lost, the operator replaces that
node alone, and real torchrun ranks keep training, take the replacement in, and finish.

The operator creates the pods on host-node-0 (harness.hostnode) and the test runs each pod's own
trainer container as local processes, all against one rendezvous port and one checkpoint directory (the
ReadWriteMany volume an elastic job would mount).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from harness.hostnode import HOST_NODE, TOLERATION, HostPod
from harness.polling import eventually
from harness.ports import free_port
from kubernetes import client
from torchrun.trainer_procs import listening

from .conftest import Jobs

ON_HOST_NODE = {"nodeSelector": {"kubernetes.io/hostname": HOST_NODE}, "tolerations": [TOLERATION]}
STEPS, EVERY = 150, 5


def running(jobs: Jobs, name: str) -> Any:
    def probe() -> Any:
        pod = next((p for p in jobs.pods("el-real") if p.metadata.name == name), None)
        return pod if pod is not None and pod.status.phase == "Running" else None

    return eventually(probe, 90, f"pod {name} running", interval_s=0.2)


def test_a_lost_node_is_replaced_while_the_rest_keeps_training(
    host_node: str, operator: Any, jobs: Jobs, kube: client.ApiClient, tmp_path: Path
) -> None:
    args = ["--model", "mlp", "--dataset", "synthetic", "--steps-per-epoch", str(STEPS)]
    args += ["--batch-size", "16", "--sample-cost-us", "3000", "--checkpoint-every", str(EVERY)]
    jobs.create(
        "el-real",
        nodes=2,
        elastic={"minNodes": 1, "maxNodes": 2},
        runPolicy={"backoffSeconds": 1, "cleanPodPolicy": "None"},  # every pod stays to be checked
        backend="gloo",
        args=args,
        metrics={"port": 0},  # both pods share this host: no fixed metrics ports
        dataLoader={"numWorkers": 0},
        checkpoint={"dir": "/checkpoints"},
        **ON_HOST_NODE,
    )
    rdzv = free_port()
    checkpoints = tmp_path / "checkpoints"
    node0 = HostPod(kube, running(jobs, "el-real-node-0-r0"), tmp_path, rdzv_port=rdzv)
    node1 = HostPod(kube, running(jobs, "el-real-node-1-r0"), tmp_path, rdzv_port=rdzv)
    with node0:
        # Node 0 first, so it hosts the c10d store as its pod does in a cluster (the address it renders).
        eventually(lambda: listening(rdzv), 60, "node 0 hosting the rendezvous store", interval_s=0.2)
        with node1:
            eventually(lambda: len(list(checkpoints.glob("ckpt-*.pt"))) >= 2, 180, "two checkpoints")
            assert "world_size=2" in node0.output()
            node1.kill()  # node 1 is lost; its pod ends as a SIGKILLed container

        st = jobs.wait(
            "el-real", lambda s: s.get("nodeReplacements") == [0, 1], "node 1 replaced", timeout=60
        )
        assert (st["phase"], st["attempt"], st["restartCount"]) == ("Running", 0, 1)
        eventually(lambda: "NodeReplaced" in jobs.events("el-real"), 30, "the NodeReplaced Event")
        with HostPod(kube, running(jobs, "el-real-node-1-r0-1"), tmp_path, rdzv_port=rdzv) as replacement:
            assert node0.wait(timeout=300) == 0, node0.output()[-4000:]
            assert replacement.wait(timeout=120) == 0, replacement.output()[-4000:]

    st = jobs.wait_phase("el-real", "Succeeded", timeout=60)
    assert (st["attempt"], st["restartCount"], st["nodeReplacements"]) == (0, 1, [0, 1])
    # Node 0's pod never restarted: its torchrun re-formed the worker group (alone for a while, or with
    # the replacement at once when it joined within the rendezvous' last call) and went on from the
    # latest checkpoint, finishing with both nodes.
    sizes = re.findall(r"joined process group: backend=gloo world_size=(\d)", node0.output())
    assert len(sizes) >= 2 and sizes[0] == "2" and sizes[-1] == "2", sizes
    resumed = re.findall(r"resumed at epoch \d+, step \d+ of the epoch, global step (\d+)", node0.output())
    assert resumed and int(resumed[-1]) >= EVERY
    # KWOK ends a pod a moment after its exit annotation, so the replacement may still read Running
    # when node 0's end has already made the job Succeeded.
    want = {
        "el-real-node-0-r0": "Succeeded",
        "el-real-node-1-r0": "Failed",
        "el-real-node-1-r0-1": "Succeeded",
    }
    eventually(lambda: jobs.pod_phases("el-real") == want, 30, f"pod phases {want}", interval_s=0.2)
