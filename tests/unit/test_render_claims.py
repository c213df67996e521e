"""GPUs through DRA: the ResourceClaimTemplate and what the pods say about it, as whole objects."""

from __future__ import annotations

from typing import Any

import pytest
from torchjob_core.render import claims, podgroup, pods
from unit.jobs import job_of

OWNER = {
    "apiVersion": "torchjob.dev/v1alpha1",
    "kind": "TrainingJob",
    "name": "j",
    "uid": "u",
    "controller": True,
    "blockOwnerDeletion": True,
}
LABELS = {
    "app.kubernetes.io/name": "torchjob",
    "app.kubernetes.io/component": "trainer",
    "app.kubernetes.io/managed-by": "torchjob-operator",
    "torchjob.dev/job-name": "j",
}
DRA = {"gpusPerNode": 4, "gpuDeviceClassName": "gpu.example.com"}


def trainer(pod: dict[str, Any]) -> dict[str, Any]:
    return dict(pod["spec"]["containers"][0])


def test_the_claim_template_asks_for_exactly_gpus_per_node_devices_of_the_class() -> None:
    assert claims.render_claim_template(job_of(resources=DRA)) == {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": "j-gpus", "namespace": "ns", "labels": LABELS, "ownerReferences": [OWNER]},
        "spec": {
            "spec": {
                "devices": {
                    "requests": [
                        {
                            "name": "gpus",
                            "exactly": {
                                "deviceClassName": "gpu.example.com",
                                "allocationMode": "ExactCount",
                                "count": 4,
                            },
                        }
                    ]
                }
            }
        },
    }


@pytest.mark.parametrize("resources", [{}, {"gpusPerNode": 4}], ids=["no-gpus", "extended-resource"])
def test_no_device_class_means_no_claims(resources: dict[str, Any]) -> None:
    job = job_of(resources=resources)
    pod = pods.render_pod(job, 0, 0)
    assert claims.render_claim_template(job) is None
    assert "resourceClaims" not in pod["spec"] and "claims" not in trainer(pod)["resources"]


def test_pods_claim_from_the_template_instead_of_the_extended_resource() -> None:
    job = job_of(resources={**DRA, "requests": {"cpu": "8"}, "limits": {"memory": "64Gi"}})
    pod = pods.render_pod(job, 1, 0)
    assert pod["spec"]["resourceClaims"] == [{"name": "torchjob-gpus", "resourceClaimTemplateName": "j-gpus"}]
    assert trainer(pod)["resources"] == {
        "requests": {"cpu": "8"},
        "limits": {"memory": "64Gi"},
        "claims": [{"name": "torchjob-gpus"}],
    }
    # The count still drives the GPU rules: one process per device, nccl.
    env = {e["name"]: e.get("value") for e in trainer(pod)["env"]}
    assert (env["PET_NPROC_PER_NODE"], env["TORCHJOB_BACKEND"]) == ("4", "nccl")


def test_template_claims_are_kept_beside_ours() -> None:
    theirs = {"name": "nic", "resourceClaimTemplateName": "rdma"}
    template = {
        "spec": {
            "resourceClaims": [theirs],
            "containers": [{"name": "trainer", "resources": {"claims": [{"name": "nic"}]}}],
        }
    }
    pod = pods.render_pod(job_of(resources=DRA, template=template), 0, 0)
    assert [c["name"] for c in pod["spec"]["resourceClaims"]] == ["nic", "torchjob-gpus"]
    assert trainer(pod)["resources"]["claims"] == [{"name": "nic"}, {"name": "torchjob-gpus"}]


def test_podgroup_min_resources_leave_claimed_gpus_out() -> None:
    group = podgroup.render_podgroup(
        job_of(scheduling={"gang": True}, resources={**DRA, "requests": {"cpu": "1"}}, nodes=2)
    )
    assert group is not None and group["spec"]["minResources"] == {"cpu": "2"}
