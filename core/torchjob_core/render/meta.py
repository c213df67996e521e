"""Names, labels and owner references shared by every child object."""

from __future__ import annotations

from typing import Any

from torchjob_core import constants
from torchjob_core.spec import TrainingJob


def service_name(job: TrainingJob) -> str:
    """The headless Service, which is also every pod's subdomain."""
    return job.name


def podgroup_name(job: TrainingJob) -> str:
    return job.name


def claim_template_name(job: TrainingJob) -> str:
    """The ResourceClaimTemplate of the job's GPUs (DRA)."""
    return f"{job.name}-gpus"


def hostname(job: TrainingJob, index: int) -> str:
    """Stable across attempts, so the master address never changes."""
    return f"{job.name}-node-{index}"


def pod_name(job: TrainingJob, index: int, attempt: int, replacement: int = 0) -> str:
    """Unique per attempt (and elastic replacement), so failed pods can stay for their logs."""
    suffix = f"-{replacement}" if replacement else ""
    return f"{hostname(job, index)}-r{attempt}{suffix}"


def master_addr(job: TrainingJob) -> str:
    """Pod 0's DNS name through the headless Service (resolvable before it is Ready)."""
    return f"{hostname(job, 0)}.{service_name(job)}.{job.namespace}.svc"


def job_labels(job: TrainingJob) -> dict[str, str]:
    """Labels on every child; `job-name` is the selector for all of them."""
    return {
        constants.LABEL_APP_NAME: constants.APP_NAME,
        constants.LABEL_APP_COMPONENT: constants.COMPONENT_TRAINER,
        constants.LABEL_MANAGED_BY: constants.MANAGED_BY,
        constants.LABEL_JOB_NAME: job.name,
    }


def selector(job: TrainingJob) -> dict[str, str]:
    return {constants.LABEL_JOB_NAME: job.name}


def owner_reference(job: TrainingJob) -> dict[str, Any]:
    """Makes the TrainingJob the controller of a child, so garbage collection removes it with the job."""
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.KIND,
        "name": job.name,
        "uid": job.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def object_meta(job: TrainingJob, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": job.namespace,
        "labels": labels if labels is not None else job_labels(job),
        "ownerReferences": [owner_reference(job)],
    }
