"""Least privilege: the operator runs as a ServiceAccount holding exactly the Role that
manifests/install-namespaced.yaml grants (rendered from the chart), and does its whole job with it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness.controlplane import ControlPlane, client_from_kubeconfig, service_account_kubeconfig
from harness.polling import eventually
from kubernetes import client

from .conftest import REPO_ROOT, Jobs, OperatorProcess

MANIFEST = REPO_ROOT / "manifests" / "install-namespaced.yaml"


def chart_role() -> dict[str, Any]:
    if not MANIFEST.exists():
        pytest.skip(f"{MANIFEST.relative_to(REPO_ROOT)} does not exist yet")
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    return next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "torchjob-operator")


def grant(kube: client.ApiClient, namespace: str, sa: str) -> None:
    role = chart_role()
    rbac: Any = client.RbacAuthorizationV1Api(kube)
    rbac.create_namespaced_role(namespace, {"metadata": {"name": sa}, "rules": role["rules"]})
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": sa},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}],
        },
    )


def test_operator_works_with_the_chart_role_and_cannot_read_secrets(
    control_plane: ControlPlane,
    kube: client.ApiClient,
    namespace: str,
    start_operator: Callable[..., OperatorProcess],
    jobs: Jobs,
) -> None:
    grant(kube, namespace, "torchjob-operator")
    kubeconfig: Path = service_account_kubeconfig(control_plane, namespace, "torchjob-operator")
    client.CoreV1Api(kube).create_namespaced_secret(namespace, {"metadata": {"name": "s"}, "data": {}})

    with client_from_kubeconfig(kubeconfig) as as_operator:
        core: Any = client.CoreV1Api(as_operator)
        with pytest.raises(client.ApiException) as denied:
            core.read_namespaced_secret("s", namespace)
        assert denied.value.status == 403
        with pytest.raises(client.ApiException) as denied_list:
            core.list_namespaced_secret(namespace)
        assert denied_list.value.status == 403

    op = start_operator(kubeconfig)
    jobs.create("rbac", nodes=2, runPolicy={"ttlSecondsAfterFinished": 1})
    jobs.wait_phase("rbac", "Running")
    jobs.exit("rbac-node-0-r0", 137)
    jobs.wait(
        "rbac",
        lambda s: s.get("attempt") == 1 and s.get("phase") == "Running",
        "restarted as the SA",
        timeout=90,
    )
    for name in ("rbac-node-0-r1", "rbac-node-1-r1"):
        jobs.exit(name, 0)
    jobs.wait_phase("rbac", "Succeeded")
    eventually(lambda: not jobs.exists("rbac"), 60, "TTL deletion (and finalizer removal) as the SA")
    assert {"PodsCreated", "RetryableExitCode", "JobSucceeded"} <= set(jobs.events("rbac"))
    output = op.output()
    assert "403" not in output and "Forbidden" not in output, output[-3000:]
