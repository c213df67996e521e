"""The operator's API requests for one job, counted in the real apiserver's audit log (performance.md
goal 11: at most nodes + 5 writes per job; docs/operator.md says why the floor is nodes + 7 today).

The session's apiserver logs only `harness.audit.AUDITED_NAMESPACE`, so this module's jobs run there.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from harness import audit
from harness.controlplane import ControlPlane, default_service_account_exists
from harness.polling import eventually
from kubernetes import client

from .conftest import Jobs, OperatorProcess

NODES = 4
# The Service, Kopf's finalizer, two status writes and three Events (PodsCreated, AllRanksRunning and
# the CheckpointsInEmptyDir Warning): docs/operator.md, "Where each goal stands".
WRITES_BESIDES_PODS = 7


@pytest.fixture
def namespace(kube: client.ApiClient) -> Iterator[str]:
    """The audited namespace (one test at a time uses it; deleted and awaited afterwards)."""
    core: Any = client.CoreV1Api(kube)
    name = audit.AUDITED_NAMESPACE
    core.create_namespace({"metadata": {"name": name, "labels": {"torchjob.dev/test": "true"}}})
    eventually(lambda: default_service_account_exists(kube, name), 30, f"ServiceAccount {name}/default")
    try:
        yield name
    finally:
        core.delete_namespace(name)
        eventually(lambda: not _exists(core, name), 120, f"namespace {name} gone")


def _exists(core: Any, name: str) -> bool:
    try:
        core.read_namespace(name)
    except client.ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def test_one_job_costs_its_pods_plus_seven_writes(
    operator: OperatorProcess, jobs: Jobs, control_plane: ControlPlane, namespace: str
) -> None:
    assert control_plane.audit_log is not None
    name = f"counted-{secrets.token_hex(2)}"
    jobs.create(name, nodes=NODES)
    jobs.wait_phase(name, "Running", timeout=90)
    # The last Event of the pass that saw every rank Running lands just after the status says so.
    eventually(lambda: "AllRanksRunning" in jobs.events(name), 30, "AllRanksRunning event")

    def settled() -> dict[str, int] | None:
        counts = audit.writes(audit.operator_requests(audit.events(control_plane.audit_log), namespace))
        return dict(counts) if sum(counts.values()) >= NODES + WRITES_BESIDES_PODS else None

    writes = eventually(settled, 30, f"{NODES} + {WRITES_BESIDES_PODS} writes in the audit log")
    detail = f"writes by verb and resource: {writes}"
    assert writes.get("create pods") == NODES, detail  # one create per pod: no duplicate, no retry
    assert writes.get("create services") == 1, detail
    assert sum(writes.values()) == NODES + WRITES_BESIDES_PODS, detail
