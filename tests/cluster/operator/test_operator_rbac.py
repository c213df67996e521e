"""Least privilege: the operator runs as a ServiceAccount holding exactly the Role of
manifests/install-namespaced.yaml or the ClusterRole of manifests/install.yaml (both rendered from the
chart), does its whole job with it, and cannot read Secrets."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness.controlplane import ControlPlane, client_from_kubeconfig, service_account_kubeconfig
from harness.polling import eventually
from kubernetes import client

from .conftest import REPO_ROOT, STORAGE_CLASS, Jobs, OperatorProcess

NAMESPACED = REPO_ROOT / "manifests" / "install-namespaced.yaml"
CLUSTERWIDE = REPO_ROOT / "manifests" / "install.yaml"


def chart_rules(manifest: Path, kind: str) -> list[dict[str, Any]]:
    if not manifest.exists():
        pytest.skip(f"{manifest.relative_to(REPO_ROOT)} does not exist yet")
    docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    role = next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == "torchjob-operator")
    return list(role["rules"])


@contextlib.contextmanager
def grant(kube: client.ApiClient, namespace: str, sa: str, scope: str) -> Iterator[None]:
    """Exactly the chart's Role (namespaced install) or ClusterRole (cluster-wide install) for `sa`."""
    rbac: Any = client.RbacAuthorizationV1Api(kube)
    subject = [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}]
    if scope == "namespaced":
        rules = chart_rules(NAMESPACED, "Role")
        rbac.create_namespaced_role(namespace, {"metadata": {"name": sa}, "rules": rules})
        ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa}
        rbac.create_namespaced_role_binding(
            namespace, {"metadata": {"name": sa}, "roleRef": ref, "subjects": subject}
        )
        yield
        return
    rules = chart_rules(CLUSTERWIDE, "ClusterRole")
    name = f"{namespace}-{sa}"
    rbac.create_cluster_role({"metadata": {"name": name}, "rules": rules})
    ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name}
    rbac.create_cluster_role_binding({"metadata": {"name": name}, "roleRef": ref, "subjects": subject})
    try:
        yield
    finally:
        rbac.delete_cluster_role_binding(name)
        rbac.delete_cluster_role(name)


@pytest.mark.parametrize("scope", ["namespaced", "clusterwide"])
def test_operator_works_with_the_chart_role_and_cannot_read_secrets(  # noqa: PLR0917 (fixtures)
    scope: str,
    control_plane: ControlPlane,
    kube: client.ApiClient,
    namespace: str,
    start_operator: Callable[..., OperatorProcess],
    jobs: Jobs,
    static_pv: Callable[[str], str],
) -> None:
    static_pv("rbac")  # the job's checkpoint claim binds to it: the claim create is the SA's too
    with grant(kube, namespace, "torchjob-operator", scope):
        run_as_operator(control_plane, kube, namespace, start_operator, jobs)


def run_as_operator(
    control_plane: ControlPlane,
    kube: client.ApiClient,
    namespace: str,
    start_operator: Callable[..., OperatorProcess],
    jobs: Jobs,
) -> None:
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
    # Kubernetes' own gang: the chart grants create on its PodGroups, nothing more; a gang restart reuses
    # the group (the scheduler forgets ended members). The checkpoint claim binds to the static PV: its
    # create is the ServiceAccount's too. Three nodes: the restart stops the two survivors with one
    # collection DELETE (deletecollection).
    gang = {"gang": True, "gangScheduler": "kubernetes"}
    storage = {"size": "1Gi", "storageClassName": STORAGE_CLASS}
    jobs.create(
        "rbac",
        nodes=3,
        runPolicy={"ttlSecondsAfterFinished": 1},
        scheduling=gang,
        checkpoint={"storage": storage},
    )
    jobs.wait_phase("rbac", "Running")
    group = jobs.custom.get_namespaced_custom_object(
        "scheduling.k8s.io", "v1alpha2", namespace, "podgroups", "rbac"
    )
    assert group["spec"]["schedulingPolicy"] == {"gang": {"minCount": 3}}
    jobs.exit("rbac-node-0-r0", 137)
    jobs.wait(
        "rbac",
        lambda s: s.get("attempt") == 1 and s.get("phase") == "Running",
        "restarted as the SA",
        timeout=90,
    )
    assert 'torchjob_operator_api_requests_total{verb="deletecollection"} 1.0' in op.metrics()
    for name in ("rbac-node-0-r1", "rbac-node-1-r1", "rbac-node-2-r1"):
        jobs.exit(name, 0)
    jobs.wait_phase("rbac", "Succeeded")
    eventually(lambda: not jobs.exists("rbac"), 60, "TTL deletion (and finalizer removal) as the SA")
    assert {"PodsCreated", "RetryableExitCode", "JobSucceeded"} <= set(jobs.events("rbac"))
    denials = [line for line in op.output().splitlines() if 'HTTP/1.1" 403' in line or "Forbidden" in line]
    assert denials == []
