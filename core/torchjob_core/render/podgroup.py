"""PodGroups for gang scheduling: Volcano, scheduler-plugins coscheduling, or Kubernetes' own.

Volcano and coscheduling take `minMember` and `minResources` (their schedulers admit a group only when its
resources fit). Kubernetes' `scheduling.k8s.io/v1alpha2` PodGroup takes only `schedulingPolicy.gang.minCount`:
kube-scheduler places the group's pods in one pod-group cycle and binds none unless `minCount` fit.
"""

from __future__ import annotations

from typing import Any

from torchjob_core import constants, quantity
from torchjob_core.render import claims, meta
from torchjob_core.spec import TrainingJob


def min_member(job: TrainingJob) -> int:
    """Pods that must be placed together: all nodes, or minNodes for an elastic job."""
    elastic = job.spec.elastic
    return elastic.min_nodes if elastic is not None else job.spec.nodes


def pod_requests(job: TrainingJob) -> dict[str, str]:
    """What one pod requests: spec requests, limits for resources without a request (as the apiserver
    defaults them), and the GPUs. Template resources are not counted."""
    res = job.spec.resources
    requests = {**res.limits, **res.requests}
    if res.gpus_per_node and not claims.uses_claims(job):  # claimed GPUs are no resource of the pod
        requests[res.gpu_resource_name] = str(res.gpus_per_node)
    return requests


def min_resources(job: TrainingJob) -> dict[str, str]:
    """Resources of `min_member` pods, so the gang scheduler admits the group only when all of it fits."""
    n = min_member(job)
    return {
        name: quantity.format_decimal(quantity.parse(value) * n)
        for name, value in sorted(pod_requests(job).items())
    }


def render_podgroup(job: TrainingJob) -> dict[str, Any] | None:
    """The PodGroup for `spec.scheduling.gang`, or None when gang scheduling is off."""
    scheduler = job.spec.scheduling.effective_gang_scheduler
    if scheduler is None:
        return None
    if scheduler == "kubernetes":
        api_version = constants.KUBERNETES_PODGROUP_API_VERSION
        spec = _kubernetes_spec(job)
    else:
        api_version, spec = _plugin_spec(job, scheduler)
    return {
        "apiVersion": api_version,
        "kind": "PodGroup",
        "metadata": meta.object_meta(job, meta.podgroup_name(job)),
        "spec": spec,
    }


def _kubernetes_spec(job: TrainingJob) -> dict[str, Any]:
    # No priorityClassName: that field is gated by WorkloadAwarePreemption; the pods carry the priority.
    # No timeout: the API has none (kube-scheduler's Permit wait is a fixed 5 minutes, docs/scheduling.md).
    return {"schedulingPolicy": {"gang": {"minCount": min_member(job)}}}


def _plugin_spec(job: TrainingJob, scheduler: str) -> tuple[str, dict[str, Any]]:
    """Volcano's or coscheduling's PodGroup spec, with its apiVersion."""
    spec: dict[str, Any] = {"minMember": min_member(job)}
    resources = min_resources(job)
    if resources:
        spec["minResources"] = resources
    if scheduler == "volcano":
        api_version = constants.VOLCANO_PODGROUP_API_VERSION
        if job.spec.priority_class_name:
            spec["priorityClassName"] = job.spec.priority_class_name
    else:
        api_version = constants.COSCHEDULING_PODGROUP_API_VERSION
    return api_version, spec
