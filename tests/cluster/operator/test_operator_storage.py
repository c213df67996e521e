"""Checkpoint storage against the real API server: the operator's claim is bound by the
controller-manager's PV controller to a static PV, the pods mount it and run, a gang restart keeps the
same claim, and the garbage collector deletes it with the job (unless whenJobDeleted: Retain). A job
without storage says at creation that its checkpoints die with its pods."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.polling import eventually
from kubernetes import client

from .conftest import STORAGE_CLASS, Jobs, OperatorProcess


def claim(jobs: Jobs, name: str) -> Any | None:
    try:
        return jobs.core.read_namespaced_persistent_volume_claim(name, jobs.ns)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def pod_claims(jobs: Jobs, job: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for pod in jobs.pods(job):
        volume = next(v for v in pod.spec.volumes if v.name == "torchjob-checkpoints")
        claimed = volume.persistent_volume_claim
        out[pod.metadata.name] = claimed.claim_name if claimed is not None else None
    return out


def test_the_checkpoint_claim_is_bound_kept_across_a_gang_restart_and_deleted_with_the_job(
    static_pv: Callable[[str], str], operator: OperatorProcess, jobs: Jobs
) -> None:
    pv = static_pv("ckpt")
    storage = {"size": "1Gi", "storageClassName": STORAGE_CLASS}
    jobs.create("ckpt", nodes=2, checkpoint={"storage": storage})
    st = jobs.wait_phase("ckpt", "Running")
    assert all(c["type"] != "CheckpointsEphemeral" for c in st["conditions"])

    first = claim(jobs, "ckpt-checkpoints")
    assert first is not None
    assert first.metadata.owner_references[0].kind == "TrainingJob"
    eventually(
        lambda: (c := claim(jobs, "ckpt-checkpoints")) is not None and c.status.phase == "Bound",
        60,
        "the PV controller binds the claim",
    )
    assert claim(jobs, "ckpt-checkpoints").spec.volume_name == pv  # type: ignore[union-attr]
    # ReadWriteOnce: node 0's pod (rank 0) mounts the claim, node 1 keeps an emptyDir.
    assert pod_claims(jobs, "ckpt") == {"ckpt-node-0-r0": "ckpt-checkpoints", "ckpt-node-1-r0": None}

    jobs.exit("ckpt-node-1-r0", 137)
    jobs.wait("ckpt", lambda s: s.get("attempt") == 1 and s.get("phase") == "Running", "gang restart", 90)
    again = claim(jobs, "ckpt-checkpoints")
    assert again is not None and again.metadata.uid == first.metadata.uid and again.status.phase == "Bound"
    assert pod_claims(jobs, "ckpt")["ckpt-node-0-r1"] == "ckpt-checkpoints"

    jobs.delete("ckpt")
    eventually(lambda: claim(jobs, "ckpt-checkpoints") is None, 90, "the claim goes with the job")


def test_ephemeral_checkpoints_are_reported_and_a_retained_claim_outlives_its_job(
    operator: OperatorProcess, jobs: Jobs
) -> None:
    jobs.create("eph", nodes=1)
    st = jobs.wait_phase("eph", "Running")
    cond = next(c for c in st["conditions"] if c["type"] == "CheckpointsEphemeral")
    assert (cond["status"], cond["reason"]) == ("True", "CheckpointsInEmptyDir")
    assert "an emptyDir at /checkpoints" in cond["message"]
    eventually(lambda: "CheckpointsInEmptyDir" in jobs.events("eph"), 30, "the Warning Event")
    warning = next(e for e in jobs.event_objects("eph") if e.reason == "CheckpointsInEmptyDir")
    assert warning.type == "Warning"

    # No PV for this claim: its pod waits, but the claim exists before it, ownerless.
    jobs.create("kept", nodes=1, checkpoint={"storage": {"size": "1Gi", "whenJobDeleted": "Retain"}})
    eventually(lambda: claim(jobs, "kept-checkpoints") is not None, 30, "the retained claim")
    assert claim(jobs, "kept-checkpoints").metadata.owner_references is None  # type: ignore[union-attr]
    eventually(lambda: len(jobs.pods("kept")) == 1, 30, "its pod")
    jobs.delete("kept")
    eventually(lambda: not jobs.exists("kept"), 60, "job deleted")
    assert claim(jobs, "kept-checkpoints") is not None
