"""The cluster commands against a fake `Cluster` (the one layer that calls the API): `logs` and `top`
plumbing that KWOK pods cannot exercise in tests/cluster, and the verbs `submit` and `delete` print."""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console
from torchjob_cli import cluster

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cpu-gloo-2node.yaml"

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


def pod(node: int, attempt: int, phase: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"j-node-{node}-r{attempt}",
            "labels": {"torchjob.dev/node-index": str(node), "torchjob.dev/attempt": str(attempt)},
        },
        "status": {"phase": phase},
    }


class FakeCluster(cluster.Cluster):
    """`Cluster` with its API calls answered here: the commands' only boundary with the cluster."""

    def __init__(self) -> None:  # no kubeconfig, no client
        self.namespace = "ns"
        self.proxied: list[str] = []
        self.applied: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.jobs: dict[str, dict[str, Any]] = {}

    def get_job(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        return {
            "metadata": {"name": "j"},
            "spec": {"image": "img:1", "nodes": 2, "procsPerNode": 2},
            "status": {"attempt": 1},
        }

    def pods(self, job: str) -> list[dict[str, Any]]:
        assert job == "j"
        return [pod(0, 0, "Failed"), pod(0, 1, "Running"), pod(1, 1, "Running")]

    def pod_log(self, pod: str, *, follow: bool, tail: int | None) -> Any:
        node = pod.split("-")[2]
        text = f"INFO [ns/j rank {int(node) * 2}/4 local 0 node {node}] step\nagent line"
        return FakeResp([text[:7].encode(), text[7:].encode()])  # a chunk boundary inside a line

    def pod_metrics(self, pod: str, port: int) -> str | None:
        self.proxied.append(f"{pod}:{port}")
        node, local = int(pod.split("-")[2]), port - 9400
        rank = node * 2 + local
        return METRICS.replace("RANK", str(rank)).replace("L", str(local)).replace("N", str(node))

    def find_job(self, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        return self.jobs.get(name)

    def apply_job(self, doc: dict[str, Any]) -> dict[str, Any]:
        """A server that bumps the resourceVersion only when the spec changes."""
        self.applied.append(doc)
        name = doc["metadata"]["name"]
        live = self.jobs.get(name)
        version = int(live["metadata"]["resourceVersion"]) if live else 0
        if live is None or live["spec"] != doc["spec"]:
            version += 1
        self.jobs[name] = {**doc, "metadata": {**doc["metadata"], "resourceVersion": str(version)}}
        return self.jobs[name]

    def delete_job(self, name: str) -> None:
        self.deleted.append(name)
        self.jobs.pop(name, None)


def fake_cluster() -> FakeCluster:
    return FakeCluster()


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
    assert sorted(cl.proxied) == [
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


class RestartingJob(FakeCluster):
    """Attempt 0 runs, the gang restarts into attempt 1, which then succeeds: one step per poll."""

    def __init__(self, endless: bool) -> None:
        super().__init__()
        self.polls = 0
        self.endless = endless
        self.opened: list[tuple[str, Any]] = []
        self.responses: list[Any] = []

    def status(self) -> dict[str, Any]:
        attempt = 0 if self.polls < 3 else 1
        phase = "Running" if self.polls < 5 else "Succeeded"
        return {"phase": phase, "attempt": attempt}

    def get_job(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        self.polls += 1
        return {"metadata": {"name": "j"}, "spec": {"nodes": 1}, "status": self.status()}

    def pods(self, job: str) -> list[dict[str, Any]]:
        attempt = self.status()["attempt"]
        items = [started_pod(0, 0, "Failed" if attempt else "Running")]
        if attempt == 1:
            items.append(
                started_pod(0, 1, "Succeeded" if self.status()["phase"] == "Succeeded" else "Running")
            )
        return items

    def pod_log(self, pod: str, *, follow: bool, tail: int | None) -> Any:
        assert follow
        self.opened.append((pod, tail))
        text = f"hello from {pod}\n"
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
    c = console()
    args = argparse.Namespace(name="j", attempt=None, follow=True, tail=10)
    assert cluster.logs(fake, args, c) == 0
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

    def get_job(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        self.polls += 1
        return {"metadata": {"name": "j"}, "spec": {"nodes": 2}, "status": self.status()}

    def pods(self, job: str) -> list[dict[str, Any]]:
        done = self.status()["phase"] == "Succeeded"
        items = [started_pod(0, 0, "Succeeded" if done else "Running")]
        items.append(started_pod(1, 0, "Running" if self.polls < 3 else "Failed"))
        if self.polls >= 3:
            replacement = started_pod(1, 0, "Succeeded" if done else "Running")
            replacement["metadata"]["name"] = "j-node-1-r0-1"
            items.append(replacement)
        return items


def test_logs_follow_picks_up_an_elastic_replacement(monkeypatch: Any) -> None:
    monkeypatch.setattr(cluster, "FOLLOW_POLL_S", 0.05)
    monkeypatch.setattr(cluster, "FOLLOW_DRAIN_S", 0.2)
    fake = ReplacingJob(endless=False)
    c = console()
    assert cluster.logs(fake, argparse.Namespace(name="j", attempt=None, follow=True, tail=None), c) == 0
    lines = c.export_text().splitlines()
    assert lines[-3:] == [
        "--- node 1 replaced: j-node-1-r0-1 ---",
        "[node 1] hello from j-node-1-r0-1",
        "TrainingJob j Succeeded",
    ]
    assert sorted(lines[:2]) == ["[node 0] hello from j-node-0-r0", "[node 1] hello from j-node-1-r0"]


def test_submit_says_created_configured_unchanged(tmp_path: Path) -> None:
    cl = fake_cluster()
    manifest = tmp_path / "job.yaml"
    doc = yaml.safe_load(EXAMPLE.read_text())
    verbs = []
    for args in (doc["spec"]["args"], doc["spec"]["args"], [*doc["spec"]["args"], "--lr", "0.1"]):
        manifest.write_text(yaml.safe_dump({**doc, "spec": {**doc["spec"], "args": args}}))
        c = console()
        assert cluster.submit(cl, argparse.Namespace(file=str(manifest), dry_run=False), c) == 0
        verbs.append(c.export_text().strip())
    assert verbs == [f"trainingjob.torchjob.dev/cpu-gloo {v}" for v in ("created", "unchanged", "configured")]
    # The namespace is filled in from the context, as the apply needs it in the body.
    assert all(d["metadata"]["namespace"] == "ns" for d in cl.applied)


def test_delete_waits_until_the_job_is_gone() -> None:
    cl = fake_cluster()
    cl.jobs["j"] = {"metadata": {"name": "j"}}
    c = console()
    assert cluster.delete(cl, argparse.Namespace(name="j", wait=True), c) == 0
    assert cl.deleted == ["j"] and c.export_text().strip() == "trainingjob.torchjob.dev/j deleted"
