"""kube-scheduler binds pods to the fake nodes and the KWOK stages play their lifecycle."""

from __future__ import annotations

from typing import Any

import pytest
from harness import nodes
from harness.polling import eventually
from kubernetes import client

EXIT_CODE = "kwok.torchjob.dev/exit-code"
GPU_NODES = {s.name for s in nodes.DEFAULT_NODES if s.gpus}


def gpu_pod(name: str, gpus: int, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "trainer",
                    "image": "torchjob-trainer:test",
                    "resources": {"limits": {nodes.GPU_RESOURCE: str(gpus)}},
                }
            ],
        },
    }


def wait_phase(core: Any, namespace: str, name: str, phase: str) -> Any:
    def reached() -> Any:
        pod = core.read_namespaced_pod(name, namespace)
        return pod if pod.status.phase == phase else None

    return eventually(reached, 30, f"pod {namespace}/{name} phase {phase}")


def test_gpu_pod_is_bound_to_a_gpu_node_and_runs(kube: client.ApiClient, namespace: str) -> None:
    core: Any = client.CoreV1Api(kube)
    core.create_namespaced_pod(namespace, gpu_pod("runner", gpus=2))
    pod = wait_phase(core, namespace, "runner", "Running")
    assert pod.spec.node_name in GPU_NODES
    conditions = {c.type: c.status for c in pod.status.conditions}
    assert conditions["PodScheduled"] == conditions["Ready"] == "True"
    (status,) = pod.status.container_statuses
    assert status.name == "trainer" and status.ready and status.state.running is not None
    assert pod.status.pod_ip and pod.status.host_ip


@pytest.mark.parametrize(("code", "phase"), [(0, "Succeeded"), (3, "Failed"), (137, "Failed")])
def test_exit_code_annotation_ends_a_running_pod(
    kube: client.ApiClient, namespace: str, code: int, phase: str
) -> None:
    core: Any = client.CoreV1Api(kube)
    core.create_namespaced_pod(namespace, gpu_pod("worker", gpus=1))
    wait_phase(core, namespace, "worker", "Running")
    core.patch_namespaced_pod("worker", namespace, {"metadata": {"annotations": {EXIT_CODE: str(code)}}})
    pod = wait_phase(core, namespace, "worker", phase)
    (status,) = pod.status.container_statuses
    assert status.state.terminated.exit_code == code
    assert status.state.terminated.reason == ("Completed" if code == 0 else "Error")
    assert not status.ready


def test_exit_code_set_at_creation_runs_then_ends(kube: client.ApiClient, namespace: str) -> None:
    core: Any = client.CoreV1Api(kube)
    annotations = {EXIT_CODE: "42", "kwok.torchjob.dev/exit-reason": "OOMKilled"}
    core.create_namespaced_pod(namespace, gpu_pod("doomed", gpus=1, annotations=annotations))
    pod = wait_phase(core, namespace, "doomed", "Failed")
    assert pod.status.start_time is not None  # it went through Running first
    (status,) = pod.status.container_statuses
    assert (status.state.terminated.exit_code, status.state.terminated.reason) == (42, "OOMKilled")


def test_pod_wanting_more_gpus_than_any_node_is_unschedulable(kube: client.ApiClient, namespace: str) -> None:
    core: Any = client.CoreV1Api(kube)
    core.create_namespaced_pod(namespace, gpu_pod("greedy", gpus=9))

    def unschedulable() -> Any:
        pod = core.read_namespaced_pod("greedy", namespace)
        scheduled = [c for c in pod.status.conditions or [] if c.type == "PodScheduled"]
        return scheduled[0] if scheduled and scheduled[0].reason == "Unschedulable" else None

    condition = eventually(unschedulable, 30, "PodScheduled=False reason Unschedulable")
    assert condition.status == "False"
    assert "nvidia.com/gpu" in condition.message
    pod = core.read_namespaced_pod("greedy", namespace)
    assert pod.status.phase == "Pending" and pod.spec.node_name is None


def test_deleted_running_pod_goes_away(kube: client.ApiClient, namespace: str) -> None:
    core: Any = client.CoreV1Api(kube)
    core.create_namespaced_pod(namespace, gpu_pod("short", gpus=1))
    wait_phase(core, namespace, "short", "Running")
    core.delete_namespaced_pod("short", namespace)  # graceful: kwok plays the kubelet's final delete

    def gone() -> bool:
        return not core.list_namespaced_pod(namespace, field_selector="metadata.name=short").items

    eventually(gone, 30, "pod short removed")
