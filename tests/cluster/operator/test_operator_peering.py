"""Two replicas with Kopf peering: exactly one works (the higher priority), and the job still runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.kubectl import Kubectl
from harness.polling import eventually
from kubernetes import client

from .conftest import REPO_ROOT, Jobs, OperatorProcess


def test_two_replicas_one_active(
    kubectl: Kubectl,
    kube: client.ApiClient,
    namespace: str,
    start_operator: Callable[..., OperatorProcess],
    jobs: Jobs,
) -> None:
    kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "manifests" / "kopf-peerings.yaml"))
    kubectl("wait", "--for=condition=Established", "crd/kopfpeerings.kopf.dev", "--timeout=60s")
    custom: Any = client.CustomObjectsApi(kube)
    custom.create_namespaced_custom_object(
        "kopf.dev",
        "v1",
        namespace,
        "kopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "torchjob"}},
    )
    # Start them one after the other, as a rolling update does: the low replica works alone first, then
    # hands over when the high one appears. Starting both in the same instant races inside Kopf.
    low = start_operator(args=("--peering", "torchjob", "--priority", "10"))
    eventually(lambda: "Resuming operations" in low.output(), 180, "the lone low-priority replica resumes")
    high = start_operator(args=("--peering", "torchjob", "--priority", "20"))
    eventually(lambda: "Resuming operations" in high.output(), 180, "the high-priority replica resumes")
    eventually(lambda: "Pausing operations in favour of" in low.output(), 180, "the low replica pauses")

    jobs.create("ha", nodes=2)
    jobs.wait_phase("ha", "Running")
    for name in ("ha-node-0-r0", "ha-node-1-r0"):
        jobs.exit(name, 0)
    jobs.wait_phase("ha", "Succeeded")
    assert "phase=Running" in high.output()
    low_log = low.output()
    assert "phase=" not in low_log  # the paused replica never reconciled
    assert low_log.count("Resuming operations") == 1  # only its lone start, never after the hand-over
