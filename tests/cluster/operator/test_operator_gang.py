"""Gang scheduling with a PodGroup API served: the PodGroup exists before any pod, names every node of
the gang, and the pods join it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from harness.kubectl import Kubectl, apply_crds
from harness.polling import eventually

from .conftest import Jobs, OperatorProcess

PODGROUP_CRD = Path(__file__).resolve().parents[2] / "data" / "podgroup-coscheduling-crd.yaml"


@pytest.fixture
def coscheduling_api(kubectl: Kubectl) -> Iterator[None]:
    apply_crds(kubectl, PODGROUP_CRD)
    try:
        yield
    finally:
        kubectl("delete", f"--filename={PODGROUP_CRD}", "--wait=true", "--ignore-not-found")


def test_gang_creates_the_podgroup_before_its_pods(
    coscheduling_api: None, operator: OperatorProcess, jobs: Jobs
) -> None:
    jobs.create("gang", nodes=2, gpus=8, scheduling={"gang": True, "gangScheduler": "coscheduling"})
    st = jobs.wait_phase("gang", "Running")
    assert st["nodesReady"] == "2/2"

    group = jobs.custom.get_namespaced_custom_object(
        "scheduling.x-k8s.io", "v1alpha1", jobs.ns, "podgroups", "gang"
    )
    assert group["spec"]["minMember"] == 2
    assert group["spec"]["minResources"]["nvidia.com/gpu"] == "16"
    owner = group["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "TrainingJob" and owner["name"] == "gang"
    group_created = datetime.fromisoformat(group["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    pods = jobs.pods("gang")
    assert len(pods) == 2
    for pod in pods:
        assert pod.metadata.labels["scheduling.x-k8s.io/pod-group"] == "gang"
        # Created after its PodGroup: the gang scheduler must know the group before it sees a member.
        assert pod.metadata.creation_timestamp >= group_created


def test_a_gang_resized_while_suspended_gets_a_podgroup_of_the_new_size(
    coscheduling_api: None, operator: OperatorProcess, jobs: Jobs
) -> None:
    # The PodGroup is created once and never updated: suspend deletes it, the resume renders it again.
    jobs.create("regang", nodes=2, scheduling={"gang": True, "gangScheduler": "coscheduling"})
    jobs.wait_phase("regang", "Running")
    jobs.patch_spec("regang", {"runPolicy": {"suspend": True}})
    jobs.wait_phase("regang", "Suspended")
    eventually(lambda: not jobs.pods("regang"), 60, "pods deleted while suspended")
    jobs.patch_spec("regang", {"nodes": 3, "runPolicy": {"suspend": False}})
    assert jobs.wait_phase("regang", "Running")["nodesReady"] == "3/3"
    group = jobs.custom.get_namespaced_custom_object(
        "scheduling.x-k8s.io", "v1alpha1", jobs.ns, "podgroups", "regang"
    )
    assert group["spec"]["minMember"] == 3
