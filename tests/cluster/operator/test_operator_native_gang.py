"""Kubernetes' own gang scheduling (gangScheduler: kubernetes) against the real kube-scheduler: the
operator creates a scheduling.k8s.io/v1alpha2 PodGroup, the pods name it, and the scheduler's
GangScheduling plugin binds all of them or none.

Each test gets its own pool of KWOK GPU nodes (a label the job selects), so the capacity is exactly what
the test says whatever else the session runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from harness import nodes
from harness.polling import eventually
from kubernetes import client

from .conftest import Jobs, OperatorProcess
from .test_operator_repair import uid_of

POOL_LABEL = "torchjob.dev/test-pool"
GANG = {"gang": True, "gangScheduler": "kubernetes"}
NATIVE = ("scheduling.k8s.io", "v1alpha2")


@pytest.fixture
def pool(kube: client.ApiClient, namespace: str) -> Iterator[Callable[[int], str]]:
    """pool(i) adds node i (8 GPUs) to this test's pool and returns its name."""
    added: list[str] = []

    def add(i: int) -> str:
        name = f"gang-{namespace[-6:]}-{i}"
        nodes.create_node(kube, name, gpus=8, labels={POOL_LABEL: namespace}, wait_ready_s=60)
        added.append(name)
        return name

    yield add
    for name in added:
        nodes.delete_node(kube, name)


def podgroup(jobs: Jobs, name: str) -> dict[str, Any]:
    return dict(jobs.custom.get_namespaced_custom_object(*NATIVE, jobs.ns, "podgroups", name))


def wait_gang_refused(jobs: Jobs, name: str) -> dict[str, Any]:
    """Until the scheduler has tried the whole group and said no; returns the job's status then."""

    def refused() -> bool:
        try:
            group = podgroup(jobs, name)
        except client.ApiException as exc:
            if exc.status == 404:  # the operator has not created it yet
                return False
            raise
        conditions = (group.get("status") or {}).get("conditions") or []
        return any(c["type"] == "PodGroupScheduled" and c["status"] == "False" for c in conditions)

    eventually(refused, 60, f"{name}: PodGroupScheduled=False", interval_s=0.2)
    return jobs.wait(name, lambda s: s.get("reason") == "Unschedulable", "Pending/Unschedulable")


def bound(jobs: Jobs, name: str) -> dict[str, str]:
    return {p.metadata.name: p.spec.node_name for p in jobs.pods(name) if p.spec.node_name}


def create_gang(jobs: Jobs, name: str, nodes: int) -> None:
    jobs.create(name, nodes=nodes, gpus=8, scheduling=GANG, nodeSelector={POOL_LABEL: jobs.ns})


def test_a_gang_that_does_not_fit_binds_nothing_until_a_blocker_goes(
    operator: OperatorProcess, jobs: Jobs, pool: Callable[[int], str]
) -> None:
    first, second = pool(0), pool(1)
    blocker = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "blocker"},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": first},
            "containers": [{"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "8"}}}],
        },
    }
    jobs.core.create_namespaced_pod(jobs.ns, blocker)
    eventually(lambda: jobs.core.read_namespaced_pod("blocker", jobs.ns).spec.node_name, 30, "blocker bound")

    create_gang(jobs, "gang", 2)
    st = wait_gang_refused(jobs, "gang")
    # One pod would fit on the free node; the gang plugin binds neither.
    assert st["phase"] == "Pending" and st["nodesReady"] == "0/2", st
    assert bound(jobs, "gang") == {}
    group = podgroup(jobs, "gang")
    assert group["spec"]["schedulingPolicy"] == {"gang": {"minCount": 2}}
    owner = group["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("TrainingJob", "gang", True)
    group_created = datetime.fromisoformat(group["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    for pod in jobs.pods("gang"):
        assert pod.spec.scheduling_group.pod_group_name == "gang"
        assert pod.metadata.creation_timestamp >= group_created  # the group first, as for other gangs

    jobs.core.delete_namespaced_pod("blocker", jobs.ns)
    st = jobs.wait_phase("gang", "Running")
    assert st["nodesReady"] == "2/2"
    assert sorted(bound(jobs, "gang").values()) == sorted([first, second])


def test_a_gang_waits_for_a_node_then_binds_all_together(
    operator: OperatorProcess, jobs: Jobs, pool: Callable[[int], str]
) -> None:
    pool(0)
    pool(1)
    create_gang(jobs, "three", 3)
    wait_gang_refused(jobs, "three")
    # The message comes from the member that does not fit, not from one that only waits for its peers.
    st = jobs.wait("three", lambda s: "Insufficient nvidia.com/gpu" in s.get("message", ""), "the shortage")
    assert st["phase"] == "Pending", st
    assert bound(jobs, "three") == {}

    third = pool(2)
    jobs.wait_phase("three", "Running")
    placed = bound(jobs, "three")
    assert len(placed) == 3 and third in placed.values()
    conditions = podgroup(jobs, "three")["status"]["conditions"]
    assert [(c["type"], c["status"]) for c in conditions] == [("PodGroupScheduled", "True")]


def test_the_gang_timeout_is_the_startup_deadline(
    operator: OperatorProcess, jobs: Jobs, pool: Callable[[int], str]
) -> None:
    # The v1alpha2 API has no timeout and kube-scheduler's Permit wait is fixed, so how long a gang may
    # wait unplaced is the spec's runPolicy.startupDeadlineSeconds, enforced by the operator.
    pool(0)
    jobs.create(
        "late",
        nodes=2,
        gpus=8,
        scheduling=GANG,
        nodeSelector={POOL_LABEL: jobs.ns},
        runPolicy={"startupDeadlineSeconds": 5},
    )
    st = jobs.wait_phase("late", "Failed", timeout=60)
    assert st["reason"] == "StartupDeadlineExceeded" and "Insufficient nvidia.com/gpu" in st["message"], st
    assert bound(jobs, "late") == {}


def test_a_deleted_native_podgroup_comes_back_within_seconds(
    operator: OperatorProcess, jobs: Jobs, pool: Callable[[int], str]
) -> None:
    # Kubernetes protects a PodGroup its pods name (finalizer scheduling.k8s.io/podgroup-protection): a
    # delete by hand only marks it while they run. Once it is really gone (here: the finalizer removed,
    # as a forced delete would), the operator's watch sees it and the job's loop re-creates it at once,
    # as for the plugins' PodGroups (test_operator_repair.py).
    pool(0)
    create_gang(jobs, "regroup", 1)
    jobs.wait_phase("regroup", "Running")
    before = podgroup(jobs, "regroup")["metadata"]["uid"]
    jobs.custom.delete_namespaced_custom_object(*NATIVE, jobs.ns, "podgroups", "regroup")
    marked = podgroup(jobs, "regroup")["metadata"]
    assert marked["uid"] == before and marked.get("deletionTimestamp"), marked
    assert marked["finalizers"] == ["scheduling.k8s.io/podgroup-protection"]
    jobs.custom.patch_namespaced_custom_object(
        *NATIVE, jobs.ns, "podgroups", "regroup", {"metadata": {"finalizers": None}}
    )
    started = time.monotonic()
    eventually(lambda: uid_of(lambda: podgroup(jobs, "regroup")) not in (None, before), 10,
               "the PodGroup re-created", interval_s=0.2)  # fmt: skip
    assert time.monotonic() - started < 10
    assert jobs.status("regroup")["phase"] == "Running"
