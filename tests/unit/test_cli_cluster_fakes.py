"""`logs` and `top` plumbing with fake API objects: what KWOK pods cannot exercise in tests/cluster."""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from rich.console import Console
from torchjob_cli import cluster

METRICS = """# TYPE torchjob_trainer_step gauge
torchjob_trainer_step{job="j",rank="RANK",local_rank="L",node_rank="N"} 7.0
torchjob_trainer_samples_per_second{job="j",rank="RANK",local_rank="L",node_rank="N"} 50.0
torchjob_trainer_data_wait_ratio{job="j",rank="RANK",local_rank="L",node_rank="N"} 0.5
"""


class FakeResp:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def stream(self, size: int) -> list[bytes]:
        return self.chunks


class FakeCore:
    def __init__(self) -> None:
        self.proxied: list[str] = []

    def list_namespaced_pod(self, ns: str, label_selector: str) -> Any:
        assert label_selector == "torchjob.dev/job-name=j"
        return argparse.Namespace(items=[pod(0, 0, "Failed"), pod(0, 1, "Running"), pod(1, 1, "Running")])

    def read_namespaced_pod_log(self, name: str, ns: str, **kw: Any) -> FakeResp:
        assert kw["container"] == "trainer"
        node = name.split("-")[2]
        text = f"INFO [ns/j rank {int(node) * 2}/4 local 0 node {node}] step\nagent line"
        return FakeResp([text[:7].encode(), text[7:].encode()])  # a chunk boundary inside a line

    def connect_get_namespaced_pod_proxy_with_path(self, name: str, ns: str, path: str) -> str:
        self.proxied.append(name)
        pod_name, port = name.split(":")
        node, local = int(pod_name.split("-")[2]), int(port) - 9400
        rank = node * 2 + local
        return METRICS.replace("RANK", str(rank)).replace("L", str(local)).replace("N", str(node))


def pod(node: int, attempt: int, phase: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"j-node-{node}-r{attempt}",
            "labels": {"torchjob.dev/node-index": str(node), "torchjob.dev/attempt": str(attempt)},
        },
        "status": {"phase": phase},
    }


class FakeApi:
    def sanitize_for_serialization(self, obj: Any) -> Any:
        return obj


class FakeCustom:
    def get_namespaced_custom_object(self, *a: Any) -> dict[str, Any]:
        return {
            "metadata": {"name": "j"},
            "spec": {"image": "img:1", "nodes": 2, "procsPerNode": 2},
            "status": {"attempt": 1},
        }


def fake_cluster() -> cluster.Cluster:
    cl = cluster.Cluster.__new__(cluster.Cluster)
    cl.api, cl.namespace, cl.core, cl.custom = FakeApi(), "ns", FakeCore(), FakeCustom()
    return cl


def console() -> Console:
    return Console(record=True, width=200, emoji=False)


def test_logs_merge_the_current_attempts_pods_with_prefixes() -> None:
    c = console()
    args = argparse.Namespace(name="j", attempt=None, follow=False, tail=None)
    assert cluster.logs(fake_cluster(), args, c) == 0
    lines = sorted(c.export_text().splitlines())
    assert lines == [
        "[node 0 rank 0] INFO [ns/j rank 0/4 local 0 node 0] step",
        "[node 0] agent line",
        "[node 1 rank 2] INFO [ns/j rank 2/4 local 0 node 1] step",
        "[node 1] agent line",
    ]


def test_top_scrapes_every_rank_through_the_pod_proxy() -> None:
    cl = fake_cluster()
    c = console()
    args = argparse.Namespace(name="j", prometheus=None, once=True, interval=1.0)
    assert cluster.top(cl, args, c) == 0
    assert sorted(cl.core.proxied) == [
        "j-node-0-r1:9400",
        "j-node-0-r1:9401",
        "j-node-1-r1:9400",
        "j-node-1-r1:9401",
    ]
    text = c.export_text()
    for rank in range(4):
        assert any(ln.split()[:3] == ["│", str(rank), "│"] for ln in text.splitlines()), text
    assert "200.0" in text and "50.0%" in text


def test_top_through_prometheus(monkeypatch: Any) -> None:
    asked: list[str] = []

    def fetch(url: str, timeout: float = 2.0) -> str:
        asked.append(url)
        value = "0.25" if "data_wait" in url else "10"
        result = [
            {"metric": {"rank": str(r), "node_rank": str(r // 2)}, "value": [0, value]} for r in range(2)
        ]
        return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}})

    monkeypatch.setattr(cluster.metrics, "fetch", fetch)
    c = console()
    args = argparse.Namespace(name="j", prometheus="http://prom:9090/", once=True, interval=1.0)
    assert cluster.top(fake_cluster(), args, c) == 0
    assert all(u.startswith("http://prom:9090/api/v1/query?query=torchjob_trainer_") for u in asked)
    assert len(asked) == 4
    text = c.export_text()
    assert "25.0%" in text and "20.0" in text  # two ranks at 10 samples/s


class EndlessResp:
    """A follow the server never ends on its own (KWOK's node agent): only shutdown() stops it."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.closed = threading.Event()

    def stream(self, size: int) -> Iterator[bytes]:
        yield self.text.encode()
        self.closed.wait(30)
        raise ConnectionError("closed")

    def shutdown(self) -> None:
        self.closed.set()

    def close(self) -> None:
        pass


class RestartingJob:
    """Attempt 0 runs, the gang restarts into attempt 1, which then succeeds: one step per poll."""

    def __init__(self, endless: bool) -> None:
        self.polls = 0
        self.endless = endless
        self.opened: list[tuple[str, Any]] = []
        self.responses: list[Any] = []

    def status(self) -> dict[str, Any]:
        attempt = 0 if self.polls < 3 else 1
        phase = "Running" if self.polls < 5 else "Succeeded"
        return {"phase": phase, "attempt": attempt}

    def get_namespaced_custom_object(self, *a: Any) -> dict[str, Any]:
        self.polls += 1
        return {"metadata": {"name": "j"}, "spec": {"nodes": 1}, "status": self.status()}

    def list_namespaced_pod(self, ns: str, label_selector: str) -> Any:
        attempt = self.status()["attempt"]
        items = [started_pod(0, 0, "Failed" if attempt else "Running")]
        if attempt == 1:
            items.append(
                started_pod(0, 1, "Succeeded" if self.status()["phase"] == "Succeeded" else "Running")
            )
        return argparse.Namespace(items=items)

    def read_namespaced_pod_log(self, name: str, ns: str, **kw: Any) -> Any:
        self.opened.append((name, kw.get("tail_lines")))
        text = f"hello from {name}\n"
        resp = EndlessResp(text) if self.endless else FakeResp([text.encode()])
        self.responses.append(resp)
        return resp


def started_pod(node: int, attempt: int, phase: str) -> dict[str, Any]:
    p = pod(node, attempt, phase)
    state = {"running": {}} if phase == "Running" else {"terminated": {"exitCode": 0}}
    p["status"]["containerStatuses"] = [{"name": "trainer", "state": state}]
    return p


@pytest.mark.parametrize("endless", [False, True], ids=["kubelet-ends-streams", "streams-never-end"])
def test_logs_follow_picks_up_the_next_gang_attempt(monkeypatch: Any, endless: bool) -> None:
    monkeypatch.setattr(cluster, "FOLLOW_POLL_S", 0.05)
    monkeypatch.setattr(cluster, "FOLLOW_DRAIN_S", 0.2)
    fake = RestartingJob(endless)
    cl = fake_cluster()
    cl.core, cl.custom = fake, fake
    c = console()
    args = argparse.Namespace(name="j", attempt=None, follow=True, tail=10)
    assert cluster.logs(cl, args, c) == 0
    assert c.export_text().splitlines() == [
        "[node 0] hello from j-node-0-r0",
        "--- gang attempt 1 ---",
        "[node 0] hello from j-node-0-r1",
        "TrainingJob j Succeeded",
    ]
    # --tail trims only what was there when following began; the restarted pod is read whole.
    assert fake.opened == [("j-node-0-r0", 10), ("j-node-0-r1", None)]
    if endless:
        assert all(r.closed.is_set() for r in fake.responses)


class ReplacingJob(RestartingJob):
    """An elastic job whose node 1 is replaced alone (same attempt), then node 0 succeeds."""

    def status(self) -> dict[str, Any]:
        return {"phase": "Running" if self.polls < 5 else "Succeeded", "attempt": 0}

    def get_namespaced_custom_object(self, *a: Any) -> dict[str, Any]:
        self.polls += 1
        return {"metadata": {"name": "j"}, "spec": {"nodes": 2}, "status": self.status()}

    def list_namespaced_pod(self, ns: str, label_selector: str) -> Any:
        done = self.status()["phase"] == "Succeeded"
        items = [started_pod(0, 0, "Succeeded" if done else "Running")]
        items.append(started_pod(1, 0, "Running" if self.polls < 3 else "Failed"))
        if self.polls >= 3:
            replacement = started_pod(1, 0, "Succeeded" if done else "Running")
            replacement["metadata"]["name"] = "j-node-1-r0-1"
            items.append(replacement)
        return argparse.Namespace(items=items)


def test_logs_follow_picks_up_an_elastic_replacement(monkeypatch: Any) -> None:
    monkeypatch.setattr(cluster, "FOLLOW_POLL_S", 0.05)
    monkeypatch.setattr(cluster, "FOLLOW_DRAIN_S", 0.2)
    fake = ReplacingJob(endless=False)
    cl = fake_cluster()
    cl.core, cl.custom = fake, fake
    c = console()
    assert cluster.logs(cl, argparse.Namespace(name="j", attempt=None, follow=True, tail=None), c) == 0
    lines = c.export_text().splitlines()
    assert lines[-3:] == [
        "--- node 1 replaced: j-node-1-r0-1 ---",
        "[node 1] hello from j-node-1-r0-1",
        "TrainingJob j Succeeded",
    ]
    assert sorted(lines[:2]) == ["[node 0] hello from j-node-0-r0", "[node 1] hello from j-node-1-r0"]
