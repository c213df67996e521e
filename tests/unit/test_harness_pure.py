"""Pure parts of the cluster-test harness: node and kubeconfig documents, stage file, polling."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import yaml
from harness import audit, kubeconfig, nodes, pki
from harness.flags import STAGES_FILE
from harness.polling import eventually
from harness.ports import free_ports


def test_gpu_node_manifest_advertises_gpus_and_is_kwok_managed() -> None:
    node = nodes.node_manifest("g", gpus=8, cpu="64", memory="512Gi", labels={"pool": "a"})
    assert node["status"]["allocatable"][nodes.GPU_RESOURCE] == "8"
    assert node["status"]["capacity"] == node["status"]["allocatable"]
    assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
    assert node["metadata"]["labels"]["pool"] == "a"
    assert node["metadata"]["labels"]["nvidia.com/gpu.count"] == "8"
    assert "taints" not in node["spec"]


def test_cpu_node_manifest_has_no_gpu_resource_or_labels() -> None:
    node = nodes.node_manifest("c")
    assert nodes.GPU_RESOURCE not in node["status"]["capacity"]
    assert not any(k.startswith("nvidia.com/") for k in node["metadata"]["labels"])


def test_default_nodes_match_the_contract() -> None:
    shapes = {(s.name, s.gpus, s.cpu, s.memory) for s in nodes.DEFAULT_NODES}
    assert shapes == {
        ("gpu-node-0", 8, "64", "512Gi"),
        ("gpu-node-1", 8, "64", "512Gi"),
        ("cpu-node-0", 0, "16", "64Gi"),
        ("cpu-node-1", 0, "16", "64Gi"),
    }


def test_token_kubeconfig_embeds_ca_and_token() -> None:
    config = kubeconfig.token_kubeconfig("https://127.0.0.1:1", b"PEM", "alice", "tok", namespace="ns")
    cluster = config["clusters"][0]["cluster"]
    assert base64.b64decode(cluster["certificate-authority-data"]) == b"PEM"
    assert config["users"][0] == {"name": "alice", "user": {"token": "tok"}}
    (context,) = config["contexts"]
    assert config["current-context"] == context["name"]
    assert context["context"]["namespace"] == "ns"


def test_openssl_config_lists_every_san() -> None:
    text = pki.openssl_config(("127.0.0.1", "10.96.0.1"))
    assert "IP.1 = 127.0.0.1" in text and "IP.2 = 10.96.0.1" in text
    assert "DNS.4 = kubernetes.default.svc" in text


def test_stage_file_covers_the_pod_and_node_lifecycle() -> None:
    stages = [d for d in yaml.safe_load_all(STAGES_FILE.read_text()) if d]
    assert {d["kind"] for d in stages} == {"Stage"}
    assert {d["apiVersion"] for d in stages} == {"kwok.x-k8s.io/v1alpha1"}
    by_name = {d["metadata"]["name"]: d["spec"] for d in stages}
    assert set(by_name) == {
        "torchjob-node-initialize",
        "torchjob-node-heartbeat",
        "torchjob-pod-running",
        "torchjob-pod-succeeded",
        "torchjob-pod-failed",
        "torchjob-pod-delete",
        "torchjob-pod-terminate-held",
        "torchjob-pod-delete-held-ended",
    }
    failed_keys = [e["key"] for e in by_name["torchjob-pod-failed"]["selector"]["matchExpressions"]]
    assert '.metadata.annotations["kwok.torchjob.dev/exit-code"]' in failed_keys
    assert by_name["torchjob-pod-delete"]["next"]["delete"] is True
    assert by_name["torchjob-pod-delete-held-ended"]["next"]["delete"] is True
    # A deleted pod that finalizers hold ends first (exit 143, as after SIGTERM), as the kubelet ends it;
    # a host-node pod's own process sets that code, and the stage waits for it.
    held = by_name["torchjob-pod-terminate-held"]
    assert '"kwok.torchjob.dev/exit-code" ) "143"' in held["next"]["statusTemplate"]
    awaits = [e for e in held["selector"]["matchExpressions"] if "delete-awaits-exit" in e["key"]]
    assert [(e["operator"], e["values"]) for e in awaits] == [("In", ["ends"])]


def test_free_ports_are_distinct() -> None:
    ports = free_ports(6)
    assert len(set(ports)) == 6


def test_eventually_returns_the_first_truthy_value_and_names_what_timed_out() -> None:
    values = iter([None, 0, "ok"])
    assert eventually(lambda: next(values), 5, interval_s=0) == "ok"
    with pytest.raises(TimeoutError, match="never: not reached"):
        eventually(lambda: None, 0, "never", interval_s=0)


class _Exited:
    def exit_reason(self) -> str | None:
        return "process exited (3)"

    def failure(self, message: str) -> Exception:
        return AssertionError(f"{message}: its log")


def test_eventually_stops_waiting_once_the_watched_process_exits() -> None:
    with pytest.raises(AssertionError, match=r"process exited \(3\) before ready: its log"):
        eventually(lambda: None, 60, "ready", interval_s=0, watch=_Exited())


def test_count_requests_counts_completed_requests_of_one_user() -> None:
    def event(
        user: str, verb: str, resource: str, stage: str = "ResponseComplete", sub: str = ""
    ) -> dict[str, Any]:
        ref = {"resource": resource} | ({"subresource": sub} if sub else {})
        return {"user": {"username": user}, "verb": verb, "objectRef": ref, "stage": stage}

    lines = [
        event("op", "create", "pods"),
        event("op", "create", "pods"),
        event("op", "patch", "trainingjobs", sub="status"),
        event("op", "watch", "pods", stage="ResponseStarted"),
        event("admin", "create", "pods"),
    ]
    assert audit.count_requests(lines, "op") == {("create", "pods"): 2, ("patch", "trainingjobs/status"): 1}
