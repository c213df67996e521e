"""Failures that only a real kubelet produces, reaching the TrainingJob's status: an image that cannot be
pulled, and a trainer killed for exceeding its memory limit."""

from __future__ import annotations

from typing import Any

from e2e import jobs
from e2e.support import Kubectl, progress
from harness.polling import eventually

# A registry on a loopback port nothing listens on: the pull fails at once, and never leaves this machine.
MISSING_IMAGE = "127.0.0.1:9/torchjob-trainer:does-not-exist"
PULL_REASONS = {"ErrImagePull", "ImagePullBackOff"}
# Touches 1 GiB in the trainer's only process: far over the 512Mi limit.
HOG = ["python", "-c", "b = bytearray(1 << 30); print(len(b))"]


def one_node(name: str, **spec: Any) -> dict[str, Any]:
    job = jobs.example(name=name)
    job["spec"].update({"nodes": 1, "procsPerNode": 1, **spec})
    return job


def test_missing_image_is_pending_with_the_pull_reason(kubectl: Kubectl, e2e_namespace: str) -> None:
    job = one_node("no-image", image=MISSING_IMAGE)
    jobs.apply(kubectl, job, e2e_namespace)

    def pending() -> dict[str, Any] | None:
        phase, status = jobs.status_line(kubectl, "no-image", e2e_namespace)
        reasons = {c.get("reason") for c in status.get("conditions", []) if c.get("type") == "Pending"}
        return status if phase == "Pending" and reasons & PULL_REASONS else None

    status = eventually(pending, 120, "Pending with an image-pull reason", 2)
    (cond,) = [c for c in status["conditions"] if c["type"] == "Pending"]
    progress(f"Pending: {cond['reason']}: {cond.get('message')}")
    assert cond["status"] == "True"
    assert MISSING_IMAGE in cond.get("message", "") or "127.0.0.1:9" in cond.get("message", ""), cond


def test_memory_hog_is_oomkilled_137_and_fails_per_policy(kubectl: Kubectl, e2e_namespace: str) -> None:
    job = one_node(
        "oom",
        command=HOG,
        args=[],
        resources={
            "requests": {"cpu": jobs.CPU_REQUEST, "memory": "128Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        },
        runPolicy={"backoffLimit": 0},
    )
    jobs.apply(kubectl, job, e2e_namespace)
    status = jobs.wait_for_phase(kubectl, "oom", e2e_namespace, "Failed", timeout=300)
    (pod,) = jobs.pods(kubectl, "oom", e2e_namespace)
    (state,) = [c["state"] for c in pod["status"]["containerStatuses"] if c["name"] == "trainer"]
    progress(f"oom pod: {state}; job status: {status.get('conditions')}")
    assert state["terminated"]["reason"] == "OOMKilled", state
    assert state["terminated"]["exitCode"] == 137, state
    # 137 is retryable by default; with backoffLimit 0 the policy fails the job at the first one.
    assert status.get("lastExitCode") == 137, status
    (failed,) = [c for c in status["conditions"] if c["type"] == "Failed"]
    assert failed["reason"] == "BackoffLimitExceeded", failed
