"""`ControlPlane(audit=True)` logs every API request, so benchmarks can count a client's requests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import audit
from harness.controlplane import ControlPlane, client_from_kubeconfig, service_account_kubeconfig
from kubernetes import client


def test_audit_log_counts_requests_per_user(k8s_bin_dir: Path) -> None:
    with ControlPlane(bin_dir=k8s_bin_dir, default_nodes=False, audit=True) as cp:
        assert cp.audit_log is not None
        with cp.api_client() as admin:
            rbac: Any = client.RbacAuthorizationV1Api(admin)
            rbac.create_namespaced_role(
                "default",
                {
                    "metadata": {"name": "cm-reader"},
                    "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
                },
            )
            rbac.create_namespaced_role_binding(
                "default",
                {
                    "metadata": {"name": "cm-reader"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-reader"},
                    "subjects": [{"kind": "ServiceAccount", "name": "counted", "namespace": "default"}],
                },
            )
        path = service_account_kubeconfig(cp, "default", "counted")
        with client_from_kubeconfig(path) as api:
            core: Any = client.CoreV1Api(api)
            for _ in range(3):
                core.list_namespaced_config_map("default")
            try:
                core.list_namespaced_secret("default")
            except client.ApiException as exc:
                assert exc.status == 403
        counts = audit.count_requests(audit.events(cp.audit_log), "system:serviceaccount:default:counted")
    assert counts == {("list", "configmaps"): 3, ("list", "secrets"): 1}
