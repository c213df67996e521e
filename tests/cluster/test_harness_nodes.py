"""The default fake nodes of docs/contracts.md, and nodes a test adds itself."""

from __future__ import annotations

from typing import Any

from harness import nodes
from harness.polling import eventually
from kubernetes import client, watch


def test_default_nodes_are_ready_with_contract_capacity(kube: client.ApiClient) -> None:
    core: Any = client.CoreV1Api(kube)
    by_name = {n.metadata.name: n for n in core.list_node().items}
    for shape in nodes.DEFAULT_NODES:
        node = by_name[shape.name]
        assert nodes.is_ready(node), shape.name
        assert not node.spec.taints, f"{shape.name} must not need a toleration"
        assert node.status.allocatable["cpu"] == shape.cpu
        assert node.status.allocatable["memory"] == shape.memory
        gpus = node.status.allocatable.get(nodes.GPU_RESOURCE)
        assert gpus == (str(shape.gpus) if shape.gpus else None), shape.name


def test_kwok_renews_node_leases(kube: client.ApiClient) -> None:
    leases: Any = client.CoordinationV1Api(kube)

    def lease_names() -> set[str] | None:
        names = {lease.metadata.name for lease in leases.list_namespaced_lease("kube-node-lease").items}
        return names if names >= {s.name for s in nodes.DEFAULT_NODES} else None

    eventually(lease_names, 30, "a kube-node-lease Lease per default node")


def test_create_and_delete_extra_gpu_node(kube: client.ApiClient) -> None:
    core: Any = client.CoreV1Api(kube)
    nodes.create_node(kube, "gpu-node-extra", gpus=4, labels={"pool": "extra"})
    try:
        node = core.read_node("gpu-node-extra")
        assert nodes.is_ready(node)
        assert node.status.capacity[nodes.GPU_RESOURCE] == "4"
        assert node.metadata.labels["pool"] == "extra"
        assert node.metadata.labels["nvidia.com/gpu.present"] == "true"
    finally:
        nodes.delete_node(kube, "gpu-node-extra")

    def gone() -> bool:
        return "gpu-node-extra" not in {n.metadata.name for n in core.list_node().items}

    eventually(gone, 30, "node gpu-node-extra deleted")
    nodes.delete_node(kube, "gpu-node-extra")  # deleting a missing node is fine


def test_pods_of_a_deleted_node_fail_with_disruption_target(kube: client.ApiClient, namespace: str) -> None:
    """Node loss as the operator sees it: the pod garbage collector marks the orphaned pod Failed with a
    DisruptionTarget condition, then deletes it. Slow by nature: upstream waits a fixed 40 s quarantine
    and runs every 20 s, so this takes 40-80 s."""
    core: Any = client.CoreV1Api(kube)
    nodes.create_node(kube, "doomed-node", gpus=1)
    pod = {
        "metadata": {"name": "orphan"},
        "spec": {
            "nodeName": "doomed-node",  # bound directly: no other node may take it
            "containers": [{"name": "trainer", "image": "torchjob-trainer:test"}],
        },
    }
    core.create_namespaced_pod(namespace, pod)
    running = eventually(
        lambda: (p := core.read_namespaced_pod("orphan", namespace)).status.phase == "Running" and p,
        30,
        "pod orphan Running",
    )
    nodes.delete_node(kube, "doomed-node")
    events: list[tuple[str, Any]] = []
    stream: Any = watch.Watch()  # type: ignore[no-untyped-call]
    for event in stream.stream(
        core.list_namespaced_pod,
        namespace,
        field_selector="metadata.name=orphan",
        resource_version=running.metadata.resource_version,
        timeout_seconds=150,
    ):
        events.append((event["type"], event["object"]))
        if event["type"] == "DELETED":
            stream.stop()
    assert events and events[-1][0] == "DELETED", [t for t, _ in events]
    failed = [obj for _, obj in events if obj.status.phase == "Failed"]
    assert failed, "the pod garbage collector marks the pod Failed before deleting it"
    conditions = {c.type: c for c in failed[0].status.conditions}
    assert conditions["DisruptionTarget"].status == "True"
    assert conditions["DisruptionTarget"].reason == "DeletionByPodGC"
