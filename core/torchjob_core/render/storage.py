"""Where checkpoints live: the claim the operator creates, the volume at checkpoint.dir, and what a
user is told about it.

A job's checkpoints survive a pod only on a volume that outlives it. `spec.checkpoint.storage` gives one
PersistentVolumeClaim per job: created from the template (`render_claim`, name `<job>-checkpoints`,
owned by the job unless `whenJobDeleted: Retain`) or the user's `existingClaim`. ReadWriteMany claims
are mounted by every pod; any other mode only by node 0's pod, where rank 0 of a fixed-size job runs
and writes, so the other nodes keep an emptyDir (the trainer reads the newest checkpoint any node sees).
Without storage, a user or template mount at checkpoint.dir is used as is, and with nothing mounted
there an emptyDir keeps the directory writable for uid 10001 but dies with the pod (`checkpoint_location`
says so: the operator's CheckpointsEphemeral condition and the CLI's warning read it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torchjob_core import constants
from torchjob_core.render import meta
from torchjob_core.spec import TrainingJob, template_container

JSON = dict[str, Any]


def claim_name(job: TrainingJob) -> str | None:
    """The claim the pods mount: the user's existingClaim or `<job>-checkpoints`; None without storage."""
    storage = job.spec.checkpoint.storage
    if storage is None:
        return None
    return storage.existing_claim or f"{job.name}{constants.CHECKPOINT_CLAIM_SUFFIX}"


def render_claim(job: TrainingJob) -> JSON | None:
    """The PersistentVolumeClaim the operator creates before the pods (None unless storage.size)."""
    storage = job.spec.checkpoint.storage
    if storage is None or not storage.creates_claim or storage.size is None:
        return None
    name = claim_name(job)
    assert name is not None
    metadata = meta.object_meta(job, name)
    if storage.when_job_deleted == "Retain":
        # No owner: the garbage collector leaves it when the job goes.
        del metadata["ownerReferences"]
    spec: JSON = {
        "accessModes": list(storage.access_modes),
        "resources": {"requests": {"storage": storage.size}},
    }
    if storage.storage_class_name:
        spec["storageClassName"] = storage.storage_class_name
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata, "spec": spec}


def _mount_at_dir(job: TrainingJob) -> JSON | None:
    """The user's or the template's volumeMount at checkpoint.dir, if any."""
    trainer = template_container(job.spec.template) or {}
    mounts = [*job.spec.volume_mounts, *(trainer.get("volumeMounts") or [])]
    return next((m for m in mounts if m.get("mountPath") == job.spec.checkpoint.dir), None)


def _volume(job: TrainingJob, name: str) -> JSON | None:
    template_volumes = (job.spec.template.get("spec") or {}).get("volumes") or []
    return next((v for v in [*job.spec.volumes, *template_volumes] if v.get("name") == name), None)


def checkpoint_volume(job: TrainingJob, index: int) -> JSON | None:
    """The volume torchjob mounts at checkpoint.dir in node `index`'s pod; None when the user's mount
    stays. Storage wins over a template mount there (spec.volumeMounts there are rejected with it)."""
    storage = job.spec.checkpoint.storage
    if storage is not None and (storage.shared or index == 0):
        return {
            "name": constants.CHECKPOINT_VOLUME_NAME,
            "persistentVolumeClaim": {"claimName": claim_name(job)},
        }
    if storage is not None or _mount_at_dir(job) is None:
        return {"name": constants.CHECKPOINT_VOLUME_NAME, "emptyDir": {}}
    return None


def checkpoint_mount(job: TrainingJob, index: int) -> JSON | None:
    if checkpoint_volume(job, index) is None:
        return None
    return {"name": constants.CHECKPOINT_VOLUME_NAME, "mountPath": job.spec.checkpoint.dir}


@dataclasses.dataclass(frozen=True)
class Location:
    """Where a job's checkpoints live, in words, and whether they die with their pod."""

    where: str
    ephemeral: bool


def checkpoint_location(job: TrainingJob) -> Location:
    spec = job.spec
    storage, directory = spec.checkpoint.storage, spec.checkpoint.dir
    if storage is not None:
        mounted = "every pod" if storage.shared else "node 0's pod (rank 0)"
        if storage.existing_claim:
            owner = "existing claim"
        elif storage.when_job_deleted == "Retain":
            owner = f"{storage.size}, kept after the job"
        else:
            owner = f"{storage.size}, deleted with the job"
        return Location(
            f"PersistentVolumeClaim {claim_name(job)} ({owner}) at {directory}, on {mounted}", False
        )
    mount = _mount_at_dir(job)
    if mount is None:
        return Location(f"an emptyDir at {directory}", True)
    volume = _volume(job, str(mount.get("name"))) or {}
    if "emptyDir" in volume:
        return Location(f"volume {mount.get('name')} (an emptyDir) at {directory}", True)
    return Location(f"volume {mount.get('name')} at {directory}", False)


def ephemeral_warning(job: TrainingJob) -> str | None:
    """One line for the user when checkpoints die with their pod, else None."""
    location = checkpoint_location(job)
    if not location.ephemeral:
        return None
    return (
        f"checkpoints go to {location.where} and are lost when a pod is replaced (gang restart, "
        "preemption, node loss): set spec.checkpoint.storage or mount a volume there"
    )
