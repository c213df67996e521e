"""TrainingJob helpers of the e2e tier: the example manifest, apply, phase waits, pods (as `e2e.jobs`)."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml
from e2e.support import TIMEOUT, Kubectl, progress
from harness.polling import eventually

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cpu-gloo-2node.yaml"
JOB_LABEL = "torchjob.dev/job-name"
CPU_REQUEST = os.environ.get("TORCHJOB_E2E_CPU_REQUEST", "250m")
# Long enough to look inside the pods, scrape them and let Prometheus take a 1m rate (15 s scrapes) while
# they train: about 3 minutes on 2 cores (the example alone takes seconds). --steps-per-epoch only caps an
# epoch, so the synthetic dataset (lazy: one sample per index) is made big enough to fill it.
LONG_RUN = ["--dataset-size", "1000000", "--sample-cost-us", "2000"]
LONGER = [*LONG_RUN, "--steps-per-epoch", "1200"]
FINISHED = ("Succeeded", "Failed")


def example(*, name: str | None = None, extra_args: list[str] | None = None) -> dict[str, Any]:
    """examples/cpu-gloo-2node.yaml with its CPU request lowered (limits kept): 2 x 2 CPUs does not fit
    next to the control plane, CoreDNS and the operator on a 2-core node (kind or the real node)."""
    job = copy.deepcopy(dict(yaml.safe_load(EXAMPLE.read_text())))
    job["spec"]["resources"]["requests"]["cpu"] = CPU_REQUEST
    if name:
        job["metadata"]["name"] = name
    if extra_args:
        job["spec"]["args"] = [*job["spec"]["args"], *extra_args]
    return job


def apply(kubectl: Kubectl, job: dict[str, Any], namespace: str) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(job))


def status_line(kubectl: Kubectl, name: str, namespace: str) -> tuple[str, dict[str, Any]]:
    job = kubectl.json("get", "trainingjob", name, "-n", namespace)
    status = job.get("status") or {}
    nodes = status.get("nodes") or {}
    progress(
        f"{namespace}/{name}: phase={status.get('phase', '-')} attempt={status.get('attempt', 0)} "
        f"nodes running={nodes.get('running', 0)} succeeded={nodes.get('succeeded', 0)} "
        f"failed={nodes.get('failed', 0)}"
    )
    return str(status.get("phase", "")), status


def wait_for_phase(
    kubectl: Kubectl, name: str, namespace: str, want: str, timeout: float | None = None
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        phase, status = status_line(kubectl, name, namespace)
        assert phase != "Failed" or want == "Failed", f"{name} failed: {status.get('conditions')}"
        return status if phase == want else None

    return dict(eventually(reached, timeout or TIMEOUT, f"{namespace}/{name} to be {want}", 3))


def pods(kubectl: Kubectl, name: str, namespace: str) -> list[dict[str, Any]]:
    items = kubectl.json("get", "pods", "-n", namespace, "-l", f"{JOB_LABEL}={name}")["items"]
    return sorted(items, key=lambda p: p["metadata"]["name"])


def running_pods(kubectl: Kubectl, name: str, namespace: str, count: int) -> list[dict[str, Any]]:
    """`count` pods of the job whose trainer container runs (not merely scheduled)."""

    def ready() -> list[dict[str, Any]] | None:
        phase = (kubectl.json("get", "trainingjob", name, "-n", namespace).get("status") or {}).get("phase")
        # A finished job has no running pods left to wait for: say so instead of waiting out the timeout.
        assert phase not in FINISHED, f"{namespace}/{name} is {phase}: it finished before this check"
        found = [
            p for p in pods(kubectl, name, namespace)
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
        ]  # fmt: skip
        return found if len(found) == count else None

    return list(eventually(ready, TIMEOUT, f"{count} running pods of {namespace}/{name}", 2))
