"""Fake KWOK nodes: GPU nodes advertising `nvidia.com/gpu` and CPU-only nodes.

kwok plays only nodes carrying `MANAGED_ANNOTATION` (it runs with
`--manage-nodes-with-annotation-selector`). The nodes have no taint, so test pods need no toleration.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from kubernetes import client

MANAGED_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
GPU_RESOURCE = "nvidia.com/gpu"
# Labels NVIDIA's GPU feature discovery puts on real GPU nodes, so nodeSelector tests look realistic.
GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"


@dataclass(frozen=True)
class NodeShape:
    name: str
    gpus: int
    cpu: str
    memory: str


DEFAULT_NODES = (
    NodeShape("gpu-node-0", gpus=8, cpu="64", memory="512Gi"),
    NodeShape("gpu-node-1", gpus=8, cpu="64", memory="512Gi"),
    NodeShape("cpu-node-0", gpus=0, cpu="16", memory="64Gi"),
    NodeShape("cpu-node-1", gpus=0, cpu="16", memory="64Gi"),
)


def node_manifest(
    name: str,
    *,
    gpus: int = 0,
    cpu: str = "16",
    memory: str = "64Gi",
    pods: int = 110,
    gpu_resource: str = GPU_RESOURCE,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The Node object (with status: capacity is accepted on create, as from a kubelet)."""
    resources = {"cpu": cpu, "memory": memory, "pods": str(pods), "ephemeral-storage": "1Ti"}
    node_labels = {
        "type": "kwok",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
    }
    if gpus:
        resources[gpu_resource] = str(gpus)
        node_labels |= {
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.count": str(gpus),
            "nvidia.com/gpu.product": GPU_PRODUCT,
        }
    node_labels |= labels or {}
    key, value = MANAGED_ANNOTATION
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": node_labels,
            "annotations": {key: value, "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {},
        "status": {"capacity": dict(resources), "allocatable": dict(resources)},
    }


def create_node(
    api: client.ApiClient,
    name: str,
    *,
    gpus: int = 0,
    cpu: str = "16",
    memory: str = "64Gi",
    labels: dict[str, str] | None = None,
    wait_ready_s: float | None = 30.0,
) -> dict[str, Any]:
    """Creates a kwok-managed node and (unless `wait_ready_s` is None) waits until kwok marks it Ready."""
    body = node_manifest(name, gpus=gpus, cpu=cpu, memory=memory, labels=labels)
    core: Any = client.CoreV1Api(api)  # Any: the typed client wants models, we send dicts
    core.create_node(body)
    if wait_ready_s is not None:
        wait_ready(api, [name], wait_ready_s)
    return body


def delete_node(api: client.ApiClient, name: str) -> None:
    """Deletes the node; missing is fine. Its pods are left to the pod garbage collector, as in a cluster."""
    try:
        client.CoreV1Api(api).delete_node(name)
    except client.ApiException as exc:
        if exc.status != 404:
            raise


def create_default_nodes(api: client.ApiClient, wait_ready_s: float = 60.0) -> None:
    for shape in DEFAULT_NODES:
        create_node(api, shape.name, gpus=shape.gpus, cpu=shape.cpu, memory=shape.memory, wait_ready_s=None)
    wait_ready(api, [s.name for s in DEFAULT_NODES], wait_ready_s)


def is_ready(node: Any) -> bool:
    conditions = (node.status and node.status.conditions) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def wait_ready(api: client.ApiClient, names: list[str], timeout_s: float) -> None:
    core: Any = client.CoreV1Api(api)
    deadline = time.monotonic() + timeout_s
    pending = list(names)
    while pending:
        pending = [n for n in pending if not is_ready(core.read_node(n))]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nodes not Ready after {timeout_s:.0f}s: {', '.join(pending)}")
        time.sleep(0.2)
