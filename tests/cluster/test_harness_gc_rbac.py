"""kube-controller-manager collects owned objects; RBAC limits a ServiceAccount's kubeconfig."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from harness.controlplane import ControlPlane, client_from_kubeconfig, service_account_kubeconfig
from harness.polling import eventually
from kubernetes import client


def test_deleting_an_owner_garbage_collects_its_pod(kube: client.ApiClient, namespace: str) -> None:
    core: Any = client.CoreV1Api(kube)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "owned", "ownerReferences": [ref]},
            "spec": {"containers": [{"name": "trainer", "image": "torchjob-trainer:test"}]},
        },
    )
    core.delete_namespaced_config_map("owner", namespace)

    def collected() -> bool:
        return not core.list_namespaced_pod(namespace).items

    eventually(collected, 60, "garbage collector deletes pod owned by the deleted ConfigMap")


@pytest.fixture
def pod_reader(
    control_plane: ControlPlane, kube: client.ApiClient, namespace: str
) -> Iterator[client.ApiClient]:
    """An ApiClient for ServiceAccount `reader`, bound to a Role that may only get and list pods."""
    rbac: Any = client.RbacAuthorizationV1Api(kube)
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "pod-reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
    )
    path = service_account_kubeconfig(control_plane, namespace, "reader")
    with client_from_kubeconfig(path) as api:
        yield api


def test_service_account_kubeconfig_gets_only_what_rbac_grants(
    pod_reader: client.ApiClient, namespace: str
) -> None:
    core: Any = client.CoreV1Api(pod_reader)
    assert core.list_namespaced_pod(namespace).items == []
    denied = [
        lambda: core.list_namespaced_secret(namespace),
        lambda: core.create_namespaced_pod(
            namespace, {"metadata": {"name": "x"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
        ),
        lambda: core.list_namespaced_pod("default"),
        core.list_node,
    ]
    for call in denied:
        with pytest.raises(client.ApiException) as info:
            call()
        assert info.value.status == 403
        assert f"system:serviceaccount:{namespace}:reader" in str(info.value.body)
