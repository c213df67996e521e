"""What the cluster commands show, built from plain API dicts: tables, describe sections, log prefixes.

Pure (the caller passes `now`), so the unit tests drive it with fake objects.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from torchjob_core import constants, spec
from torchjob_core.render import storage
from torchjob_core.status import parse_time

from torchjob_cli.progress import Progress

Obj = Mapping[str, Any]

# The trainer's log prefix names the global rank: "[ns/job rank 3/4 local 1 node 1]".
_TRAINER_RANK = re.compile(r"\brank (?P<rank>\d+)/\d+\b")


def age(since: str | None, now: float) -> str:
    """kubectl-style age: 45s, 12m, 3h, 2d."""
    t = parse_time(since)
    if t is None:
        return "-"
    s = max(0, int(now - t.timestamp()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size * (2 if unit != "m" else 1):
            return f"{s // size}{unit}"
    return f"{s}s"


def _status(job: Obj) -> Mapping[str, Any]:
    status: Mapping[str, Any] = job.get("status") or {}
    return status


def _nodes(job: Obj) -> str:
    n = _status(job).get("nodes") or {}
    total = n.get("total", (job.get("spec") or {}).get("nodes", 1))
    return f"{n.get('running', 0)}/{total}"


def _figure(progress: Mapping[str, Any], key: str) -> str:
    """One status.progress figure as `kubectl get` prints it (numbers as written), `-` when absent."""
    value = progress.get(key)
    return "-" if value is None or value == "" else str(value)


def progress_cells(job: Obj, *, wide: bool = False) -> list[str]:
    """PROGRESS and ETA (and with wide SAMPLES/S and DATA-WAIT): the CRD's printer columns."""
    progress: Mapping[str, Any] = _status(job).get("progress") or {}
    keys = ("steps", "eta", "samplesPerSecond", "dataWaitRatio") if wide else ("steps", "eta")
    return [_figure(progress, k) for k in keys]


def jobs_table(jobs: Iterable[Obj], *, now: float, with_namespace: bool = False, wide: bool = False) -> Table:
    t = Table(box=None, pad_edge=False)
    cols = ["NAMESPACE"] if with_namespace else []
    figures = ["PROGRESS", "ETA", *(["SAMPLES/S", "DATA-WAIT"] if wide else [])]
    for c in [*cols, "NAME", "PHASE", "NODES", "RESTARTS", "EXIT", *figures, "AGE"]:
        t.add_column(c, no_wrap=True)
    for job in jobs:
        md, st = job.get("metadata") or {}, _status(job)
        exit_code = st.get("lastExitCode")
        row = [md.get("namespace", "")] if with_namespace else []
        row += [
            md.get("name", ""),
            st.get("phase") or "-",
            _nodes(job),
            str(st.get("restartCount", 0)),
            "-" if exit_code is None else str(exit_code),
            *progress_cells(job, wide=wide),
            age(md.get("creationTimestamp"), now),
        ]
        t.add_row(*row)
    return t


def _progress_line(st: Obj, now: float) -> str | None:
    """`420/1000, epoch 1, ETA 8m20s, 1000.0 samples/s, data wait 0.125 (read 12s ago)`."""
    p: Mapping[str, Any] = st.get("progress") or {}
    if not p:
        return None
    parts = [str(p.get("steps", "-")), f"epoch {p.get('epoch', '-')}"]
    if p.get("eta"):
        parts.append(f"ETA {p['eta']}")
    parts += [f"{p.get('samplesPerSecond', '-')} samples/s", f"data wait {p.get('dataWaitRatio', '-')}"]
    return ", ".join(parts) + f" (read {age(p.get('readTime'), now)} ago from {p.get('pod', '-')})"


def attempt_of(job: Obj, asked: int | None) -> int:
    return asked if asked is not None else int(_status(job).get("attempt") or 0)


def node_index(pod: Obj) -> int:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    try:
        return int(labels.get(constants.LABEL_NODE_INDEX, 0))
    except ValueError:
        return 0


def pod_attempt(pod: Obj) -> int:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    try:
        return int(labels.get(constants.LABEL_ATTEMPT, 0))
    except ValueError:
        return 0


def pods_of_attempt(pods: Iterable[Obj], attempt: int) -> list[Obj]:
    """The pods of one gang attempt, by node index (earlier attempts' failed pods are kept)."""
    return sorted((p for p in pods if pod_attempt(p) == attempt), key=node_index)


def container_started(pod: Obj) -> bool:
    """Whether the trainer container has started, so the kubelet has logs to serve."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == constants.CONTAINER_NAME:
            state = cs.get("state") or {}
            return state.get("running") is not None or state.get("terminated") is not None
    return False


def job_finished(job: Obj) -> bool:
    return _status(job).get("phase") in constants.TERMINAL_PHASES


def metrics_layout(job: Obj) -> tuple[int, int]:
    """Ranks per pod and local rank 0's metrics port in each pod (0: metrics are off), by the rules the
    operator rendered the pods with (one parse of the spec for both)."""
    loaded = spec.load(job)
    return loaded.nproc_per_node, loaded.spec.metrics.port


def pod_exit_code(pod: Obj) -> int | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated")
        if term and cs.get("name") == constants.CONTAINER_NAME:
            return int(term.get("exitCode", 0))
    return None


def prefixed_log_line(node: int, line: str) -> str:
    """`[node N rank R] line` when the trainer's prefix names the rank, else `[node N] line`."""
    m = _TRAINER_RANK.search(line)
    return f"[node {node} rank {m['rank']}] {line}" if m else f"[node {node}] {line}"


def _kv(pairs: Iterable[tuple[str, Any]]) -> Table:
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold")
    t.add_column()
    for k, v in pairs:
        t.add_row(k, "-" if v is None or v == "" else str(v))
    return t


def _restarts(st: Obj) -> str:
    """`3`, or `3 (2 disruptions, not counted against backoffLimit)`."""
    restarts, disruptions = int(st.get("restartCount") or 0), int(st.get("disruptions") or 0)
    if not disruptions:
        return str(restarts)
    return f"{restarts} ({disruptions} disruptions, not counted against backoffLimit)"


def _replaced(st: Obj) -> str | None:
    """Elastic replacements in this attempt, e.g. `node 1 x2, node 3 x1` (None when there are none)."""
    counts = [(i, n) for i, n in enumerate(st.get("nodeReplacements") or []) if n]
    return ", ".join(f"node {i} x{n}" for i, n in counts) or None


def _name(pod: Obj) -> str:
    return str((pod.get("metadata") or {}).get("name", ""))


def _first_failure(st: Mapping[str, Any]) -> str | None:
    """status.lastFailure in one line: pod, node, ranks, reason, exit code, and the message."""
    f = st.get("lastFailure") or {}
    if not f:
        return None
    ranks = f" ranks {f['ranks']}" if f.get("ranks") else ""
    line = f"{f.get('summary', f.get('pod'))} (node {f.get('nodeIndex')}{ranks}, attempt {f.get('attempt')})"
    return f"{line}: {f['message']}" if f.get("message") else line


def checkpoints(job: Obj) -> str:
    """Where the job's checkpoints live, and whether they die with their pod."""
    try:
        location = storage.checkpoint_location(spec.load(job))
    except spec.SpecError:
        return "- (invalid spec)"
    return f"{location.where} (lost when a pod is replaced)" if location.ephemeral else location.where


def describe(job: Obj, pods: Sequence[Obj], events: Sequence[Obj], *, now: float) -> list[RenderableType]:
    md, spec, st = job.get("metadata") or {}, job.get("spec") or {}, _status(job)
    out: list[RenderableType] = [
        _kv(
            [
                ("Name:", md.get("name")),
                ("Namespace:", md.get("namespace")),
                (
                    "Created:",
                    f"{md.get('creationTimestamp', '-')} ({age(md.get('creationTimestamp'), now)} ago)",
                ),
                ("Image:", spec.get("image")),
                ("Managed by:", spec.get("managedBy", constants.CONTROLLER_NAME)),
                ("Nodes:", f"{spec.get('nodes', 1)} x {spec.get('procsPerNode', 'auto')} procs"),
                ("Checkpoints:", checkpoints(job)),
                ("Phase:", st.get("phase")),
                ("Attempt:", st.get("attempt", 0)),
                ("Restarts:", _restarts(st)),
                ("Replaced nodes:", _replaced(st)),
                ("Last exit code:", st.get("lastExitCode")),
                ("First failure:", _first_failure(st)),
                ("Node pods:", _node_counts(st)),
                ("Progress:", _progress_line(st, now)),
                ("Start:", st.get("startTime")),
                ("Completion:", st.get("completionTime")),
            ]
        ),
        Text("\nConditions:", style="bold"),
    ]
    conds = Table(box=None, pad_edge=False)
    for c in ("TYPE", "STATUS", "REASON", "MESSAGE", "AGE"):
        conds.add_column(c, overflow="fold")
    for c in st.get("conditions") or []:
        conds.add_row(
            c.get("type", ""),
            c.get("status", ""),
            c.get("reason", ""),
            c.get("message", ""),
            age(c.get("lastTransitionTime"), now),
        )
    out.append(conds if conds.row_count else Text("  <none>"))
    out.append(Text("\nPods:", style="bold"))
    pt = Table(box=None, pad_edge=False)
    for c in ("NAME", "NODE", "ATTEMPT", "PHASE", "EXIT", "HOST"):
        pt.add_column(c, no_wrap=True)
    for p in sorted(pods, key=lambda p: (pod_attempt(p), node_index(p), _name(p))):
        code = pod_exit_code(p)
        pt.add_row(
            _name(p),
            str(node_index(p)),
            str(pod_attempt(p)),
            (p.get("status") or {}).get("phase", ""),
            "-" if code is None else str(code),
            (p.get("spec") or {}).get("nodeName") or "-",
        )
    out.append(pt if pt.row_count else Text("  <none>"))
    out.append(Text("\nEvents:", style="bold"))
    out.append(events_table(events, now=now))
    return out


def _node_counts(st: Mapping[str, Any]) -> str:
    n = st.get("nodes") or {}
    keys = ("total", "pending", "running", "succeeded", "failed")
    return ", ".join(f"{k} {n[k]}" for k in keys if k in n) or "-"


def _epoch(value: str | None) -> float:
    """Seconds since the epoch of an API timestamp; 0 (first) for none."""
    t = parse_time(value)
    return t.timestamp() if t is not None else 0.0


def _event_time(e: Obj) -> str | None:
    series = e.get("series") or {}
    value: str | None = (
        e.get("lastTimestamp")
        or series.get("lastObservedTime")
        or e.get("eventTime")
        or e.get("firstTimestamp")
    )
    if value is None:
        value = (e.get("metadata") or {}).get("creationTimestamp")
    return value


def events_table(events: Sequence[Obj], *, now: float, limit: int = 20) -> RenderableType:
    recent = sorted(events, key=lambda e: _epoch(_event_time(e)))[-limit:]
    if not recent:
        return Text("  <none>")
    t = Table(box=None, pad_edge=False)
    for c in ("AGE", "TYPE", "REASON", "FROM", "MESSAGE"):
        t.add_column(c, overflow="fold")
    for e in recent:
        source = (e.get("source") or {}).get("component") or e.get("reportingComponent") or ""
        count = e.get("count") or 1
        t.add_row(
            age(_event_time(e), now) + (f" (x{count})" if count > 1 else ""),
            e.get("type", ""),
            e.get("reason", ""),
            source,
            e.get("message", ""),
        )
    return t


@dataclasses.dataclass(frozen=True)
class TopRow:
    rank: int
    node: int | None
    step: int | None
    samples_per_s: float | None
    data_wait_ratio: float | None
    loss: float | None

    @classmethod
    def from_progress(cls, node: int | None, p: Progress) -> TopRow:
        return cls(p.rank, node, p.step, p.samples_per_s, p.data_wait_ratio, p.loss)


def top_table(name: str, rows: list[TopRow]) -> RenderableType:
    if not rows:
        return Text(f"{name}: no rank is serving metrics yet (pods not running, or metrics.port is 0)")
    t = Table(title=f"{name}: per-rank throughput")
    for c in ("RANK", "NODE", "STEP", "SAMPLES/S", "DATA WAIT", "LOSS"):
        t.add_column(c, justify="right")
    for r in sorted(rows, key=lambda r: r.rank):
        t.add_row(
            str(r.rank),
            "-" if r.node is None else str(r.node),
            "-" if r.step is None else str(r.step),
            "-" if r.samples_per_s is None else f"{r.samples_per_s:,.1f}",
            "-" if r.data_wait_ratio is None else f"{r.data_wait_ratio:.1%}",
            "-" if r.loss is None else f"{r.loss:.4g}",
        )
    total = sum(r.samples_per_s or 0.0 for r in rows)
    t.add_section()
    t.add_row("all", "", "", f"{total:,.1f}", "", "")
    return Group(t)


PROMETHEUS_METRICS = {
    column: constants.TRAINER_METRIC_PREFIX + series
    for column, series in (
        ("step", "step"),
        ("samples_per_s", "samples_per_second"),
        ("data_wait_ratio", "data_wait_ratio"),
        ("loss", "loss"),
    )
}


def prometheus_queries(job: str, namespace: str) -> dict[str, str]:
    """One instant query per column. The trainer labels its series with the job's name; the namespace
    label comes from the scrape (the chart's PodMonitor adds it), so same-named jobs stay apart."""
    sel = f'job="{job}",namespace="{namespace}"'
    return {field: f"{metric}{{{sel}}}" for field, metric in PROMETHEUS_METRICS.items()}


def rows_from_prometheus(results: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[TopRow]:
    """Join the instant-query vectors (field -> result list) into rows by the `rank` label."""
    by_rank: dict[int, dict[str, Any]] = {}
    for field, vector in results.items():
        for sample in vector:
            labels = sample.get("metric") or {}
            try:
                rank = int(labels["rank"])
                value = float(sample["value"][1])
            except (KeyError, ValueError, IndexError, TypeError):
                continue
            row = by_rank.setdefault(rank, {"node": labels.get("node_rank")})
            row[field] = value
    rows = []
    for rank, v in by_rank.items():
        node = v.get("node")
        step = v.get("step")
        rows.append(
            TopRow(
                rank,
                int(node) if isinstance(node, str) and node.isdigit() else None,
                int(step) if step is not None else None,
                v.get("samples_per_s"),
                v.get("data_wait_ratio"),
                v.get("loss"),
            )
        )
    return rows


def api_error_message(status: int | None, body: Any, reason: str | None) -> str:
    """The apiserver's own message (it names the field on validation errors), else the HTTP reason."""
    try:
        doc = json.loads(body) if isinstance(body, str | bytes) else None
    except ValueError:
        doc = None
    if isinstance(doc, dict) and doc.get("message"):
        return str(doc["message"])
    return f"{status} {reason or ''}".strip()
