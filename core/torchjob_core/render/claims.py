"""GPUs through Dynamic Resource Allocation (`spec.resources.gpuDeviceClassName`).

One ResourceClaimTemplate per job asks for exactly `gpusPerNode` devices of the DeviceClass; every pod
names it in `spec.resourceClaims`, so the controller-manager makes one ResourceClaim per pod (deleted with
the pod) and the scheduler places a pod only on a node whose ResourceSlices can satisfy it. Pods then carry
no extended GPU resource: the count lives in the claim, and `procsPerNode: auto` and `backend: auto` still
read `gpusPerNode`.
"""

from __future__ import annotations

from typing import Any

from torchjob_core import constants
from torchjob_core.render import meta
from torchjob_core.spec import TrainingJob


def uses_claims(job: TrainingJob) -> bool:
    return job.spec.resources.gpu_device_class_name is not None


def render_claim_template(job: TrainingJob) -> dict[str, Any] | None:
    """The job's ResourceClaimTemplate (resource.k8s.io/v1), or None when GPUs are an extended resource."""
    res = job.spec.resources
    if res.gpu_device_class_name is None:
        return None
    request = {
        "name": constants.GPU_CLAIM_REQUEST,
        "exactly": {
            "deviceClassName": res.gpu_device_class_name,
            "allocationMode": "ExactCount",
            "count": res.gpus_per_node,
        },
    }
    return {
        "apiVersion": constants.RESOURCE_CLAIM_API_VERSION,
        "kind": "ResourceClaimTemplate",
        "metadata": meta.object_meta(job, meta.claim_template_name(job)),
        "spec": {"spec": {"devices": {"requests": [request]}}},
    }


def pod_claims(job: TrainingJob) -> list[dict[str, Any]]:
    """The pod's `spec.resourceClaims` entry for the GPUs (empty without DRA)."""
    if not uses_claims(job):
        return []
    return [{"name": constants.GPU_CLAIM_NAME, "resourceClaimTemplateName": meta.claim_template_name(job)}]


def container_claims(job: TrainingJob) -> list[dict[str, Any]]:
    """The trainer container's `resources.claims`: it, not a sidecar, gets the devices."""
    return [{"name": constants.GPU_CLAIM_NAME}] if uses_claims(job) else []
