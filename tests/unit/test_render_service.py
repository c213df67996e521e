"""render_service and render_podgroup: whole objects."""

from __future__ import annotations

from typing import Any

import pytest
from torchjob_core import spec
from torchjob_core.render import podgroup, service

LABELS = {
    "app.kubernetes.io/name": "torchjob",
    "app.kubernetes.io/component": "trainer",
    "app.kubernetes.io/managed-by": "torchjob-operator",
    "torchjob.dev/job-name": "mnist",
}
OWNERS = [
    {
        "apiVersion": "torchjob.dev/v1alpha1",
        "kind": "TrainingJob",
        "name": "mnist",
        "uid": "u-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
]
META = {"name": "mnist", "namespace": "ml", "labels": LABELS, "ownerReferences": OWNERS}


def job_of(**spec_fields: Any) -> spec.TrainingJob:
    return spec.load(
        {
            "apiVersion": "torchjob.dev/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": "mnist", "namespace": "ml", "uid": "u-1"},
            "spec": {"image": "img:1", "nodes": 3, **spec_fields},
        }
    )


@pytest.mark.parametrize(("fields", "port"), [({}, 29500), ({"elastic": {"maxNodes": 4}}, 29400)])
def test_headless_service(fields: dict[str, Any], port: int) -> None:
    assert service.render_service(job_of(**fields)) == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": META,
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {"torchjob.dev/job-name": "mnist"},
            "ports": [{"name": "rendezvous", "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, None),
        ({"scheduling": {"gang": False}}, None),
        (
            {"scheduling": {"gang": True}},
            {"apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup", "spec": {"minMember": 3}},
        ),
        (
            {"scheduling": {"gang": True, "gangScheduler": "volcano"}, "priorityClassName": "high"},
            {
                "apiVersion": "scheduling.volcano.sh/v1beta1",
                "kind": "PodGroup",
                "spec": {"minMember": 3, "priorityClassName": "high"},
            },
        ),
        (
            {"scheduling": {"gang": True, "gangScheduler": "coscheduling"}},
            {"apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup", "spec": {"minMember": 3}},
        ),
        (
            {"scheduling": {"gang": True}, "elastic": {"minNodes": 2, "maxNodes": 4}},
            {"apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup", "spec": {"minMember": 2}},
        ),
        (
            # Kubernetes' PodGroup has no minResources and no priority (gated): the pods carry both.
            {
                "scheduling": {"gang": True, "gangScheduler": "kubernetes"},
                "priorityClassName": "high",
                "resources": {"gpusPerNode": 8},
            },
            {
                "apiVersion": "scheduling.k8s.io/v1alpha2",
                "kind": "PodGroup",
                "spec": {"schedulingPolicy": {"gang": {"minCount": 3}}},
            },
        ),
        (
            {
                "scheduling": {"gang": True, "gangScheduler": "kubernetes"},
                "elastic": {"minNodes": 2, "maxNodes": 4},
            },
            {
                "apiVersion": "scheduling.k8s.io/v1alpha2",
                "kind": "PodGroup",
                "spec": {"schedulingPolicy": {"gang": {"minCount": 2}}},
            },
        ),
    ],
    ids=[
        "off",
        "explicit-off",
        "volcano",
        "volcano-priority",
        "coscheduling",
        "elastic-min",
        "kubernetes",
        "kubernetes-elastic-min",
    ],
)
def test_podgroup(fields: dict[str, Any], expected: dict[str, Any] | None) -> None:
    got = podgroup.render_podgroup(job_of(**fields))
    if expected is None:
        assert got is None
    else:
        assert got == {"apiVersion": expected["apiVersion"], "kind": "PodGroup", "metadata": META,
                       "spec": expected["spec"]}  # fmt: skip


def test_podgroup_min_resources_cover_min_member_pods() -> None:
    job = job_of(
        scheduling={"gang": True},
        elastic={"minNodes": 2, "maxNodes": 4},
        resources={
            "gpusPerNode": 8,
            "requests": {"cpu": "500m", "memory": "1.5Gi"},
            "limits": {"memory": "4Gi", "ephemeral-storage": "10G"},
        },
    )
    group = podgroup.render_podgroup(job)
    assert group is not None
    assert group["spec"] == {
        "minMember": 2,
        "minResources": {
            "cpu": "1",
            "ephemeral-storage": "20000000000",  # no request: the limit is the request
            "memory": "3221225472",
            "nvidia.com/gpu": "16",
        },
    }
