"""Fixtures for the cluster tier: one real control plane (etcd, kube-apiserver, kube-scheduler,
kube-controller-manager, kwok) per pytest session, with the default fake nodes of docs/contracts.md.

The binaries come from hack/k8sbins.sh (built once, cached outside the repo). Without them and without
Go the tier skips with the reason, unless TORCHJOB_REQUIRE_CLUSTER=1 (CI) makes that an error.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import binaries, hostnode
from harness.audit import AUDITED_NAMESPACE
from harness.controlplane import ControlPlane, default_service_account_exists
from harness.kubectl import Kubectl, apply_crds, bind
from harness.polling import eventually
from kubernetes import client

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_MANIFEST = REPO_ROOT / "manifests" / "crd.yaml"


@pytest.fixture(scope="session")
def k8s_bin_dir() -> Path:
    """The directory with etcd, kube-apiserver, kube-scheduler, kube-controller-manager and kwok."""
    try:
        return binaries.locate()
    except binaries.BinariesUnavailableError as exc:
        if os.environ.get("TORCHJOB_REQUIRE_CLUSTER") == "1":
            raise
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def control_plane(k8s_bin_dir: Path) -> Iterator[ControlPlane]:
    # The apiserver logs the requests of one namespace, for the tests that count the operator's.
    cp = ControlPlane(bin_dir=k8s_bin_dir, audit_namespaces=(AUDITED_NAMESPACE,))
    cp.start()
    previous = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(cp.kubeconfig)
    try:
        yield cp
    finally:
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous
        cp.stop()


@pytest.fixture(scope="session")
def kube(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    with control_plane.api_client() as api:
        yield api


@pytest.fixture(scope="session")
def kubectl(control_plane: ControlPlane) -> Kubectl:
    return bind(control_plane.kubeconfig)


@pytest.fixture(scope="session")
def crd(kubectl: Kubectl) -> list[dict[str, Any]]:
    """The TrainingJob CRD from manifests/crd.yaml, applied server-side and Established."""
    if not CRD_MANIFEST.exists():
        pytest.skip(
            f"{CRD_MANIFEST.relative_to(REPO_ROOT)} does not exist yet (hack/gen-manifests.py writes it)"
        )
    return apply_crds(kubectl, CRD_MANIFEST)


@pytest.fixture
def namespace(kube: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test; deleted (not awaited) afterwards."""
    slug = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].rstrip("-")
    name = f"t-{slug}-{secrets.token_hex(3)}"
    core: Any = client.CoreV1Api(kube)
    core.create_namespace({"metadata": {"name": name, "labels": {"torchjob.dev/test": "true"}}})

    eventually(lambda: default_service_account_exists(kube, name), 30, f"ServiceAccount {name}/default")
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise


@pytest.fixture(scope="session")
def host_node(kube: client.ApiClient) -> str:
    """host-node-0 (harness.hostnode): pods there are run by the test, and the apiserver reaches their
    logs and ports. Returns the host address their pods get; skips on a machine without one."""
    ip = hostnode.host_ip()
    if ip is None:
        pytest.skip("no non-loopback IPv4 address: the apiserver's pod proxy refuses loopback")
    hostnode.create_host_node(kube, ip)
    return ip
