"""Kueue admits TrainingJobs by quota, against a real Kueue manager (harness.kueue) on the session's
control plane: the pod-group integration holds a job's pods behind Kueue's scheduling gate until its
ClusterQueue has quota for all of them (docs/scheduling.md).

Kueue starts once for this module (conftest's `kueue_manager`). Each test makes its own ResourceFlavor,
ClusterQueue (serving only the test's namespace) and LocalQueue; the topology test also its own Topology
and KWOK nodes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from harness import nodes
from harness.controlplane import ControlPlane, service_account_kubeconfig
from harness.kubectl import Kubectl
from harness.polling import eventually
from kubernetes import client

from .conftest import Jobs, MakeQueues, OperatorProcess, workload
from .test_operator_rbac import grant

QUEUE = "team"
# Two pods of 1 CPU each: a ClusterQueue of 2 CPUs holds exactly one such job.
JOB_CPUS = 2
NODE = "cpu-node-1"  # the flavor's nodeLabels send admitted pods here
TOLERATION = {"key": "torchjob.dev/kueue-flavor", "operator": "Exists", "effect": "NoSchedule"}


@pytest.fixture
def queues(make_queues: MakeQueues) -> str:
    """LocalQueue `team`: its flavor sends pods to NODE with TOLERATION; quota for one job."""
    return make_queues(QUEUE, {"nodeLabels": {"kubernetes.io/hostname": NODE}, "tolerations": [TOLERATION]},
                       JOB_CPUS)  # fmt: skip


def finish(jobs: Jobs, name: str) -> None:
    for pod in jobs.pods(name):
        if pod.status.phase == "Running":
            jobs.exit(pod.metadata.name, 0)


def test_second_job_waits_for_quota_then_runs(  # noqa: PLR0917 (fixtures)
    control_plane: ControlPlane,
    kube: client.ApiClient,
    start_operator: Callable[..., OperatorProcess],
    jobs: Jobs,
    queues: str,
    kubectl: Kubectl,
) -> None:
    # As the chart's namespaced Role: Kueue acts on the labelled pods, the operator needs no Kueue rights.
    with grant(kube, jobs.ns, "torchjob-operator", "namespaced"):
        op = start_operator(service_account_kubeconfig(control_plane, jobs.ns, "torchjob-operator"))
        queue_then_admit(jobs, kubectl)
    assert [line for line in op.output().splitlines() if "Forbidden" in line] == []


def queue_then_admit(jobs: Jobs, kubectl: Kubectl) -> None:
    jobs.create("first", nodes=2, scheduling={"queue": QUEUE})
    jobs.wait_phase("first", "Running", timeout=90)
    # Kueue's flavor assignment reached the pods: its nodeLabels and tolerations are theirs.
    for pod in jobs.pods("first"):
        assert (pod.spec.node_selector or {}).get("kubernetes.io/hostname") == NODE
        assert TOLERATION in [
            {"key": t.key, "operator": t.operator, "effect": t.effect} for t in pod.spec.tolerations
        ]
        assert pod.spec.node_name == NODE

    jobs.create("second", nodes=2, scheduling={"queue": QUEUE})
    status = jobs.wait(
        "second", lambda st: st.get("reason") == "QueuedByKueue", "Pending: Kueue holds it", timeout=60
    )
    assert status["phase"] == "Pending"
    assert f"LocalQueue {QUEUE}" in status["message"]
    assert all(p.spec.scheduling_gates for p in jobs.pods("second"))
    row = kubectl("get", "tj", "second", "-n", jobs.ns, "--no-headers").stdout
    assert "Pending" in row and "QueuedByKueue" in row, row

    finish(jobs, "first")
    jobs.wait_phase("first", "Succeeded", timeout=60)
    jobs.wait_phase("second", "Running", timeout=90)


def test_higher_priority_job_preempts_then_the_lower_one_is_readmitted(
    jobs: Jobs, queues: str, priorities: tuple[str, str], operator: OperatorProcess
) -> None:
    low, high = priorities
    jobs.create("low", nodes=2, scheduling={"queue": QUEUE}, priorityClassName=low)
    jobs.wait_phase("low", "Running", timeout=90)
    first_pods = {p.metadata.name for p in jobs.pods("low")}

    jobs.create("high", nodes=2, scheduling={"queue": QUEUE}, priorityClassName=high)
    # Kueue evicts the low job's workload: its pods get Kueue's TerminationTarget condition and a
    # graceful delete (SIGTERM: the trainer checkpoints), and the operator restarts the gang, uncounted.
    jobs.wait("low", lambda st: st.get("disruptions", 0) >= 1, "disrupted by Kueue's preemption", timeout=90)
    restart = eventually(lambda: jobs.event_messages("low", "PodDisrupted"), 30, "the PodDisrupted Event")
    assert "WorkloadEvictedDueToPreempted" in restart[0], restart
    jobs.wait_phase("high", "Running", timeout=90)
    queued = jobs.wait("low", lambda st: st.get("reason") == "QueuedByKueue", "queued again", timeout=60)
    assert queued["phase"] == "Pending"
    assert queued["restartCount"] - queued["disruptions"] == 0  # not counted against backoffLimit

    finish(jobs, "high")
    jobs.wait_phase("high", "Succeeded", timeout=60)
    jobs.wait_phase("low", "Running", timeout=90)
    assert not first_pods & {p.metadata.name for p in jobs.pods("low") if p.status.phase == "Running"}


def test_a_gang_restart_keeps_its_admission(jobs: Jobs, queues: str, operator: OperatorProcess) -> None:
    """A retryable exit restarts the gang inside the admitted pod group: the new attempt's pods replace
    the old ones in Kueue's Workload and run without waiting for quota again."""
    jobs.create("gang", nodes=2, scheduling={"queue": QUEUE})
    jobs.wait_phase("gang", "Running", timeout=90)
    jobs.exit("gang-node-1-r0", 137)
    st = jobs.wait("gang", lambda s: s.get("attempt") == 1 and s.get("phase") == "Running", "attempt 1 runs",
                   timeout=90)  # fmt: skip
    assert st["restartCount"] == 1 and st["lastExitCode"] == 137
    running = {p.metadata.name for p in jobs.pods("gang") if p.status.phase == "Running"}
    assert running == {"gang-node-0-r1", "gang-node-1-r1"}
    finish(jobs, "gang")
    jobs.wait_phase("gang", "Succeeded", timeout=60)


def test_an_elastic_replacement_joins_the_admitted_group(
    jobs: Jobs, queues: str, operator: OperatorProcess
) -> None:
    """An elastic job that loses a node gets its replacement pod admitted into the same pod group while
    the survivor keeps running: the queue's quota (one job) is never asked for twice."""
    jobs.create("el", nodes=2, elastic={"minNodes": 1, "maxNodes": 2}, scheduling={"queue": QUEUE})
    jobs.wait_phase("el", "Running", timeout=90)
    jobs.exit("el-node-1-r0", 137)
    jobs.wait_pods(
        "el", {"el-node-0-r0": "Running", "el-node-1-r0": "Failed", "el-node-1-r0-1": "Running"}, timeout=90
    )
    st = jobs.wait(
        "el", lambda s: s.get("reason") == "AllRanksRunning", "the replacement running", timeout=60
    )
    assert (st["attempt"], st["nodeReplacements"]) == (0, [0, 1])
    (replacement,) = [p for p in jobs.pods("el") if p.metadata.name == "el-node-1-r0-1"]
    assert not replacement.spec.scheduling_gates and replacement.spec.node_name == NODE
    jobs.exit("el-node-0-r0", 0)
    jobs.wait_phase("el", "Succeeded", timeout=60)


def test_a_workload_priority_class_sets_the_workloads_priority_and_preempts(
    kube: client.ApiClient,
    jobs: Jobs,
    queues: str,
    workload_priorities: dict[str, int],
    operator: OperatorProcess,
) -> None:
    """scheduling.workloadPriorityClass reaches Kueue's Workload; with the pods' own priority equal (none),
    the higher class alone makes Kueue preempt the lower job."""
    low, high = workload_priorities
    jobs.create("wlow", nodes=2, scheduling={"queue": QUEUE, "workloadPriorityClass": low})
    jobs.wait_phase("wlow", "Running", timeout=90)
    wl = workload(kube, jobs.ns, "wlow")
    ref = {"group": "kueue.x-k8s.io", "kind": "WorkloadPriorityClass", "name": low}
    assert (wl["spec"]["priorityClassRef"], wl["spec"]["priority"]) == (ref, workload_priorities[low])

    jobs.create("whigh", nodes=2, scheduling={"queue": QUEUE, "workloadPriorityClass": high})
    jobs.wait("wlow", lambda st: st.get("disruptions", 0) >= 1, "preempted by the higher class", timeout=90)
    jobs.wait_phase("whigh", "Running", timeout=90)
    wl = workload(kube, jobs.ns, "whigh")
    assert (wl["spec"]["priorityClassRef"]["name"], wl["spec"]["priority"]) == (
        high,
        workload_priorities[high],
    )
    assert all(p.spec.priority_class_name is None for p in jobs.pods("whigh"))
    queued = jobs.wait("wlow", lambda st: st.get("reason") == "QueuedByKueue", "queued again", timeout=60)
    assert queued["restartCount"] - queued["disruptions"] == 0


# Topology-Aware Scheduling: a two-level Topology (block, then host) over nodes of 1 CPU each, block `a` of
# one node and block `b` of two. A job of two 1-CPU pods that requires one block fits only in `b`.
BLOCK = "torchjob.dev/test-block"
POOL = "torchjob.dev/test-tas-pool"
HOSTNAME = "kubernetes.io/hostname"


@pytest.fixture
def tas_nodes(
    kube: client.ApiClient, namespace: str, make_topology: Callable[[list[str]], str], make_queues: MakeQueues
) -> Iterator[dict[str, str]]:
    """{node: block} of this test's nodes; LocalQueue QUEUE's flavor is a TAS flavor over them (4 CPUs)."""
    blocks = {
        f"tas-{namespace[-6:]}-a0": "a",
        f"tas-{namespace[-6:]}-b0": "b",
        f"tas-{namespace[-6:]}-b1": "b",
    }
    for name, block in blocks.items():
        nodes.create_node(kube, name, cpu="1", labels={POOL: namespace, BLOCK: block}, wait_ready_s=None)
    try:
        nodes.wait_ready(kube, list(blocks), 60)
        topology = make_topology([BLOCK, HOSTNAME])
        make_queues(QUEUE, {"nodeLabels": {POOL: namespace}, "topologyName": topology}, 4)
        yield blocks
    finally:
        for name in blocks:
            nodes.delete_node(kube, name)


def assigned_hosts(topology_assignment: dict[str, Any]) -> list[str]:
    """The nodes of a Workload's topologyAssignment whose lowest level is the hostname (v1beta2 slices:
    values per level, written as `universal` or as `individual` roots sharing a prefix and suffix)."""
    assert topology_assignment["levels"][-1] == HOSTNAME, topology_assignment
    hosts = []
    for piece in topology_assignment["slices"]:
        values = piece["valuesPerLevel"][-1]
        if "universal" in values:
            hosts.append(values["universal"])
            continue
        ind = values["individual"]
        hosts += [ind.get("prefix", "") + root + ind.get("suffix", "") for root in ind["roots"]]
    return sorted(hosts)


def test_required_topology_places_the_whole_job_in_one_block(
    kube: client.ApiClient, jobs: Jobs, tas_nodes: dict[str, str], operator: OperatorProcess
) -> None:
    """Three pods fit the quota and the free CPUs, but no block: the job waits. Two pods fit only block b:
    Kueue admits them there and pins each pod to its host."""
    jobs.create("wide", nodes=3, scheduling={"queue": QUEUE, "topology": {"required": BLOCK}})
    jobs.wait("wide", lambda st: st.get("reason") == "QueuedByKueue", "queued: no block holds 3", timeout=60)

    def pending_reason() -> str | None:
        try:
            conditions = workload(kube, jobs.ns, "wide").get("status", {}).get("conditions", [])
        except client.ApiException as exc:
            if exc.status == 404:  # Kueue makes it once all three pods exist
                return None
            raise
        quota = [c["message"] for c in conditions if c["type"] == "QuotaReserved" and c["status"] == "False"]
        return quota[0] if quota else None

    why = eventually(pending_reason, 30, "wide's Workload says why it waits", interval_s=0.2)
    assert "allows to fit only 2 out of 3 pod(s)" in why, why  # block b's two nodes, not the quota

    jobs.create("tas", nodes=2, scheduling={"queue": QUEUE, "topology": {"required": BLOCK}})
    jobs.wait_phase("tas", "Running", timeout=90)
    wl = workload(kube, jobs.ns, "tas")
    (pod_set,) = wl["spec"]["podSets"]
    assert pod_set["topologyRequest"]["required"] == BLOCK
    (assignment,) = wl["status"]["admission"]["podSetAssignments"]
    block_b = sorted(n for n, block in tas_nodes.items() if block == "b")
    assert assigned_hosts(assignment["topologyAssignment"]) == block_b
    pods = jobs.pods("tas")
    assert sorted(p.spec.node_name for p in pods) == block_b
    assert all((p.spec.node_selector or {}).get(HOSTNAME) == p.spec.node_name for p in pods)

    assert "admission" not in workload(kube, jobs.ns, "wide").get("status", {})
    assert jobs.status("wide")["phase"] == "Pending"
