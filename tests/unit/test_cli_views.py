"""What the cluster commands print, from plain API objects (no cluster)."""

from __future__ import annotations

import datetime as dt

from rich.console import Console
from torchjob_cli import views

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC).timestamp()


def render(*renderables: object) -> str:
    console = Console(record=True, width=200, emoji=False)
    for r in renderables:
        console.print(r)
    return console.export_text()


def pod(node: int, attempt: int, phase: str, exit_code: int | None = None) -> dict[str, object]:
    statuses = []
    if exit_code is not None:
        statuses = [{"name": "trainer", "state": {"terminated": {"exitCode": exit_code}}}]
    return {
        "metadata": {
            "name": f"j-node-{node}-r{attempt}",
            "labels": {"torchjob.dev/node-index": str(node), "torchjob.dev/attempt": str(attempt)},
        },
        "spec": {"nodeName": "cpu-node-0"},
        "status": {"phase": phase, "containerStatuses": statuses},
    }


JOB = {
    "metadata": {"name": "j", "namespace": "team", "creationTimestamp": "2026-01-01T11:00:00Z"},
    "spec": {"nodes": 2, "procsPerNode": 2, "image": "img:1"},
    "status": {
        "phase": "Running",
        "attempt": 1,
        "restartCount": 1,
        "lastExitCode": 137,
        "nodes": {"total": 2, "running": 2},
        "conditions": [
            {
                "type": "Running",
                "status": "True",
                "reason": "AllNodesRunning",
                "message": "2/2 nodes running",
                "lastTransitionTime": "2026-01-01T11:59:30Z",
            }
        ],
    },
}


def test_age_like_kubectl() -> None:
    assert views.age("2026-01-01T11:59:15Z", NOW) == "45s"
    assert views.age("2026-01-01T11:48:00Z", NOW) == "12m"
    assert views.age("2026-01-01T09:00:00Z", NOW) == "3h"
    assert views.age("2025-12-29T12:00:00Z", NOW) == "3d"
    assert views.age(None, NOW) == "-"


def test_jobs_table() -> None:
    text = render(views.jobs_table([JOB], now=NOW, with_namespace=True))
    # No status.progress read yet: PROGRESS and ETA are "-".
    assert text.splitlines()[1].split() == ["team", "j", "Running", "2/2", "1", "137", "-", "-", "60m"]


PROGRESS = {
    "step": 420,
    "totalSteps": 1000,
    "steps": "420/1000",
    "epoch": 1,
    "samplesPerSecond": 1000.0,
    "dataWaitRatio": 0.125,
    "etaSeconds": 870,
    "eta": "14m30s",
    "readTime": "2026-01-01T11:59:48Z",
    "pod": "j-node-0-r1",
}


def test_jobs_table_shows_progress_like_kubectl_get() -> None:
    job = {**JOB, "status": {**JOB["status"], "progress": PROGRESS}}  # type: ignore[dict-item]
    lines = render(views.jobs_table([job], now=NOW)).splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "NODES", "RESTARTS", "EXIT", "PROGRESS", "ETA", "AGE"]
    assert lines[1].split() == ["j", "Running", "2/2", "1", "137", "420/1000", "14m30s", "60m"]
    lines = render(views.jobs_table([job], now=NOW, wide=True)).splitlines()
    assert lines[0].split()[5:] == ["PROGRESS", "ETA", "SAMPLES/S", "DATA-WAIT", "AGE"]
    assert lines[1].split()[5:] == ["420/1000", "14m30s", "1000.0", "0.125", "60m"]


def test_describe_shows_progress() -> None:
    job = {**JOB, "status": {**JOB["status"], "progress": PROGRESS}}  # type: ignore[dict-item]
    text = render(*views.describe(job, [], [], now=NOW))
    assert (
        "420/1000, epoch 1, ETA 14m30s, 1000.0 samples/s, data wait 0.125 (read 12s ago from j-node-0-r1)"
        in text
    )


def test_describe_shows_conditions_pods_and_events() -> None:
    events = [
        {
            "type": "Warning",
            "reason": "GangRestart",
            "message": "exit 137",
            "count": 2,
            "lastTimestamp": "2026-01-01T11:58:00Z",
            "source": {"component": "torchjob-operator"},
        },
        {
            "type": "Normal",
            "reason": "Created",
            "message": "created 2 pods",
            "eventTime": "2026-01-01T11:00:01.000000Z",
            "reportingComponent": "torchjob-operator",
        },
    ]
    pods = [pod(1, 1, "Running"), pod(0, 0, "Failed", 137), pod(0, 1, "Running")]
    text = render(*views.describe(JOB, pods, events, now=NOW))
    assert "AllNodesRunning" in text and "2/2 nodes running" in text
    assert text.index("j-node-0-r0") < text.index("j-node-0-r1") < text.index("j-node-1-r1")
    assert "Failed" in text and "137" in text
    assert text.index("created 2 pods") < text.index("exit 137")  # oldest first
    assert "2m (x2)" in text


def test_current_attempt_pods() -> None:
    pods = [pod(1, 1, "Running"), pod(0, 0, "Failed", 137), pod(0, 1, "Running")]
    current = views.pods_of_attempt(pods, views.attempt_of(JOB, None))
    assert [p["metadata"]["name"] for p in current] == ["j-node-0-r1", "j-node-1-r1"]  # type: ignore[index]
    assert views.attempt_of(JOB, 0) == 0


def test_log_lines_get_node_and_rank_prefixes() -> None:
    line = "2026-01-01T00:00:00Z INFO [team/j rank 3/4 local 1 node 1] torchjob_trainer.train: step"
    assert views.prefixed_log_line(1, line) == f"[node 1 rank 3] {line}"
    assert views.prefixed_log_line(0, "torchrun agent started") == "[node 0] torchrun agent started"


def test_prometheus_vectors_join_by_rank() -> None:
    def vec(value: float, rank: int) -> dict[str, object]:
        return {"metric": {"rank": str(rank), "node_rank": str(rank // 2)}, "value": [0, str(value)]}

    rows = views.rows_from_prometheus(
        {"step": [vec(10, 0), vec(10, 3)], "samples_per_s": [vec(100.5, 0), vec(99.5, 3)], "loss": []}
    )
    by_rank = {r.rank: r for r in rows}
    assert by_rank[3] == views.TopRow(3, 1, 10, 99.5, None, None)
    text = render(views.top_table("j", rows))
    assert "200.0" in text  # the total
    assert 'torchjob_trainer_step{job="j",namespace="team"}' in views.prometheus_queries("j", "team").values()


def test_top_without_ranks_says_why() -> None:
    assert "no rank is serving metrics yet" in render(views.top_table("j", []))


def test_api_error_message_prefers_the_apiservers_words() -> None:
    body = '{"kind":"Status","message":"trainingjobs.torchjob.dev \\"x\\" not found"}'
    assert views.api_error_message(404, body, "Not Found") == 'trainingjobs.torchjob.dev "x" not found'
    assert views.api_error_message(500, "oops", "Internal") == "500 Internal"


def test_describe_shows_elastic_replacements() -> None:
    st = {**JOB["status"], "nodeReplacements": [0, 2, 0, 1], "restartCount": 4, "disruptions": 1}  # type: ignore[dict-item]
    text = render(*views.describe({**JOB, "status": st}, [], [], now=NOW))
    assert "node 1 x2, node 3 x1" in text
    assert "4 (1 disruptions, not counted against backoffLimit)" in text
    assert "Replaced nodes:  -" in render(*views.describe(JOB, [], [], now=NOW))


def test_describe_names_the_controller_that_manages_the_job() -> None:
    assert "Managed by:      torchjob.dev/operator" in render(*views.describe(JOB, [], [], now=NOW))
    theirs = {**JOB, "spec": {**JOB["spec"], "managedBy": "kueue.x-k8s.io/multikueue"}}  # type: ignore[dict-item]
    assert "Managed by:      kueue.x-k8s.io/multikueue" in render(*views.describe(theirs, [], [], now=NOW))


def test_describe_says_where_checkpoints_live() -> None:
    assert "(lost when a pod is replaced)" in render(*views.describe(JOB, [], [], now=NOW))
    claim = {"storage": {"existingClaim": "ckpt", "accessModes": ["ReadWriteMany"]}}
    kept = {**JOB, "spec": {**JOB["spec"], "checkpoint": claim}}  # type: ignore[dict-item]
    assert (
        views.checkpoints(kept) == "PersistentVolumeClaim ckpt (existing claim) at /checkpoints, on every pod"
    )
    assert views.checkpoints({**JOB, "spec": {"nodes": "x"}}) == "- (invalid spec)"


def test_describe_shows_the_first_failure() -> None:
    failure = {
        "pod": "j-node-1-r0",
        "nodeIndex": 1,
        "node": "gpu-node-1",
        "ranks": "8-15",
        "attempt": 2,
        "exitCode": 137,
        "reason": "OOMKilled",
        "message": "out of memory",
        "summary": "j-node-1-r0 on gpu-node-1: OOMKilled (exit 137)",
    }
    st = {**JOB["status"], "lastFailure": failure}  # type: ignore[dict-item]
    text = render(*views.describe({**JOB, "status": st}, [], [], now=NOW))
    assert (
        "First failure:   j-node-1-r0 on gpu-node-1: OOMKilled (exit 137) (node 1 ranks 8-15, attempt 2): "
        "out of memory"
    ) in text
    assert "First failure:   -" in render(*views.describe(JOB, [], [], now=NOW))
