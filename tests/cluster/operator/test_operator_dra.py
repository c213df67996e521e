"""GPUs through Dynamic Resource Allocation against the real scheduler and controller-manager: the test
plays a DRA driver by publishing a ResourceSlice of 4 devices for a KWOK node (and a DeviceClass that
selects them); the operator renders the job's ResourceClaimTemplate and the pods' resourceClaims, the
controller-manager makes each pod's claim, and the scheduler allocates the devices or says why not."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from harness import nodes
from harness.controlplane import ControlPlane, service_account_kubeconfig
from kubernetes import client

from .conftest import Jobs, OperatorProcess
from .test_operator_rbac import grant

GROUP, VERSION = "resource.k8s.io", "v1"
NODE = "dra-node-0"
DRIVER = "gpu.torchjob.test"
DEVICE_CLASS = "gpu.torchjob.test"
DEVICES = 4


@pytest.fixture(scope="module")
def dra_node(kube: client.ApiClient) -> Iterator[str]:
    """A KWOK node whose only GPUs are the 4 devices of its ResourceSlice."""
    custom: Any = client.CustomObjectsApi(kube)
    nodes.create_node(kube, NODE, wait_ready_s=60)
    device_class = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DeviceClass",
        "metadata": {"name": DEVICE_CLASS},
        "spec": {"selectors": [{"cel": {"expression": f'device.driver == "{DRIVER}"'}}]},
    }
    devices = [{"name": f"gpu-{i}", "attributes": {"index": {"int": i}}} for i in range(DEVICES)]
    pool = {"name": NODE, "generation": 1, "resourceSliceCount": 1}
    resource_slice = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ResourceSlice",
        "metadata": {"name": f"{NODE}-gpus"},
        "spec": {"driver": DRIVER, "nodeName": NODE, "pool": pool, "devices": devices},
    }
    custom.create_cluster_custom_object(GROUP, VERSION, "deviceclasses", device_class)
    custom.create_cluster_custom_object(GROUP, VERSION, "resourceslices", resource_slice)
    try:
        yield NODE
    finally:
        custom.delete_cluster_custom_object(GROUP, VERSION, "resourceslices", f"{NODE}-gpus")
        custom.delete_cluster_custom_object(GROUP, VERSION, "deviceclasses", DEVICE_CLASS)
        nodes.delete_node(kube, NODE)


def create_dra_job(jobs: Jobs, name: str, gpus: int) -> None:
    resources = {"gpusPerNode": gpus, "gpuDeviceClassName": DEVICE_CLASS, "requests": {"cpu": "1"}}
    jobs.create(name, nodes=1, resources=resources)


def test_the_scheduler_allocates_the_claimed_gpus(  # noqa: PLR0917 (fixtures)
    control_plane: ControlPlane,
    kube: client.ApiClient,
    namespace: str,
    start_operator: Callable[..., OperatorProcess],
    jobs: Jobs,
    dra_node: str,
) -> None:
    # As the chart's namespaced Role: create on resourceclaimtemplates is all the operator needs.
    with grant(kube, namespace, "torchjob-operator", "namespaced"):
        op = start_operator(service_account_kubeconfig(control_plane, namespace, "torchjob-operator"))
        allocates(jobs, dra_node)
    assert [line for line in op.output().splitlines() if "Forbidden" in line] == []


def allocates(jobs: Jobs, dra_node: str) -> None:
    create_dra_job(jobs, "dra", DEVICES)
    st = jobs.wait_phase("dra", "Running")
    assert st["nodesReady"] == "1/1"
    (pod,) = jobs.pods("dra")
    assert pod.spec.node_name == dra_node
    assert pod.spec.containers[0].resources.limits is None  # no extended GPU resource

    template = jobs.custom.get_namespaced_custom_object(
        GROUP, VERSION, jobs.ns, "resourceclaimtemplates", "dra-gpus"
    )
    assert template["metadata"]["ownerReferences"][0]["name"] == "dra"
    (claim,) = jobs.custom.list_namespaced_custom_object(GROUP, VERSION, jobs.ns, "resourceclaims")["items"]
    assert claim["metadata"]["ownerReferences"][0]["name"] == pod.metadata.name  # one claim per pod
    results = claim["status"]["allocation"]["devices"]["results"]
    assert sorted(r["device"] for r in results) == [f"gpu-{i}" for i in range(DEVICES)]
    assert {(r["driver"], r["pool"], r["request"]) for r in results} == {(DRIVER, NODE, "gpus")}


def test_more_gpus_than_exist_is_pending_with_the_schedulers_reason(
    operator: OperatorProcess, jobs: Jobs, dra_node: str
) -> None:
    create_dra_job(jobs, "greedy", DEVICES * 2)
    st = jobs.wait("greedy", lambda s: s.get("reason") == "Unschedulable", "Pending/Unschedulable")
    # The scheduler's own words: no node's ResourceSlices hold 8 devices of the class.
    assert st["phase"] == "Pending" and "cannot allocate all claims" in st["message"], st
    assert jobs.pods("greedy")[0].spec.node_name is None
