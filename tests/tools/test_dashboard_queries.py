"""The Grafana dashboard: valid JSON whose PromQL names only metrics that really exist.

Trainer metric names are checked against a real scrape of a running rank, and every expression is
evaluated by a real Prometheus scraping that run: trainer panels must return data.
"""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from harness.polling import eventually
from prometheus_client.parser import text_string_to_metric_families
from torchrun.trainer_procs import scrape

DASHBOARD = Path(__file__).resolve().parents[2] / "charts" / "torchjob" / "files" / "dashboards"
METRIC = re.compile(r"\btorchjob_[a-z0-9_]+")
# What Grafana substitutes before sending a query; "All" is ".*" (the variables' allValue).
# Series a CPU trainer cannot export: NVML's GPU gauges and torch's CUDA allocator gauges exist only on a
# rank with a CUDA device (and NVML). Their names are checked against the trainer's own code instead
# (tests/unit/test_trainer_gpu.py scrapes them with NVML faked), and their queries must still parse and run.
GPU_ONLY = re.compile(r"\btorchjob_trainer_(?:gpu|cuda)_[a-z0-9_]+")
GRAFANA_VARS = {"$namespace": ".*", "$job": ".*", "$__rate_interval": "5s", "$__range": "1h"}


def load() -> dict[str, Any]:
    (path,) = DASHBOARD.glob("*.json")
    return dict(json.loads(path.read_text()))


def exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def grafana(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    return expr


def exported_names(text: str) -> set[str]:
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def test_dashboard_is_valid_grafana_json() -> None:
    dashboard = load()
    assert dashboard["uid"] == "torchjob-training"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "job"} <= variables
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["description"], panel["title"]


def test_dashboard_covers_what_the_issue_asks() -> None:
    text = "\n".join(e for _, e in exprs(load()))
    for needle in (
        "torchjob_trainer_samples_total",  # per-rank and job throughput
        "quantile by (namespace, job) (0.5",  # each rank relative to its job's median: stragglers
        "torchjob_trainer_data_wait_seconds_total",  # data-wait ratio
        "torchjob_trainer_step_duration_seconds_bucket",  # step time
        "torchjob_operator_restarts_total",
        "torchjob_operator_submit_to_running_seconds_bucket",
        # finished jobs by outcome and restarts by reason, in the namespaces picked (the jobs' own)
        'sum by (outcome) (increase(torchjob_operator_jobs_finished_total{namespace=~"$namespace"}',
        'sum by (reason) (increase(torchjob_operator_restarts_total{namespace=~"$namespace"}',
    ):
        assert needle in text, needle


def test_trainer_metrics_in_the_dashboard_are_exported(trainer_run: Any) -> None:
    exported = exported_names(scrape(trainer_run.ports[0]) or "")
    named = {
        m
        for _, e in exprs(load())
        for m in METRIC.findall(e)
        if m.startswith("torchjob_trainer_") and not GPU_ONLY.fullmatch(m)
    }
    assert named, "the dashboard names no trainer metric"
    assert named <= exported, f"not exported by the trainer: {sorted(named - exported)}"


def test_gpu_metrics_in_the_dashboard_are_the_trainers() -> None:
    """The GPU-only names the dashboard uses are the ones the trainer's NVML collector and CUDA gauges
    define (read from their sources, since no GPU rank runs here)."""
    trainer = Path(__file__).resolve().parents[2] / "trainer" / "torchjob_trainer"
    source = (trainer / "gpu_metrics.py").read_text() + (trainer / "metrics.py").read_text()
    named = {m.group(0) for _, e in exprs(load()) for m in GPU_ONLY.finditer(e)}
    assert named, "the dashboard has no GPU panel"
    for name in named:
        short = name.removeprefix("torchjob_trainer_gpu_").removeprefix("torchjob_trainer_")
        assert f'"{short}"' in source, f"{name} is not defined by the trainer"


def test_operator_metrics_in_the_dashboard_are_exported() -> None:
    metrics = pytest.importorskip("torchjob_operator.metrics", reason="operator metrics module not built yet")
    from prometheus_client import generate_latest

    registry = getattr(metrics, "REGISTRY", None)
    if registry is None:
        pytest.skip("torchjob_operator.metrics has no REGISTRY to read names from")
    # What the operator's main does at start-up, so that the labelled jobs gauge has its series, and
    # what a job loop does first, so that its namespace's job counters have theirs.
    if hasattr(metrics, "set_phases"):
        metrics.set_phases({})
    if hasattr(metrics, "namespace_seen"):
        metrics.namespace_seen("default")
    exported = exported_names(generate_latest(registry).decode())
    named = {m for _, e in exprs(load()) for m in METRIC.findall(e) if m.startswith("torchjob_operator_")}
    assert named <= exported, f"not exported by the operator: {sorted(named - exported)}"


def test_every_query_runs_on_real_prometheus_and_trainer_panels_have_data(prometheus: Any) -> None:
    eventually(lambda: len(prometheus.query("up == 1")) == 2, 60, "both ranks scraped")
    for title, expr in exprs(load()):
        query = grafana(expr)
        if "torchjob_operator_" in expr or GPU_ONLY.search(expr):
            prometheus.query(query)  # parses and evaluates; no operator and no GPU rank is scraped here
            continue
        eventually(partial(prometheus.query, query), 60, f"data for panel {title!r}: {query}")


def test_straggler_query_is_one_per_rank_around_one(prometheus: Any) -> None:
    (expr,) = [e for t, e in exprs(load()) if "median" in t]
    result = eventually(
        lambda: (r := prometheus.query(grafana(expr))) and len(r) == 2 and r,
        60,
        "relative throughput of 2 ranks",
    )
    for series in result:
        # DDP keeps ranks in lockstep; neither is far from the median of two.
        assert 0.5 < float(series["value"][1]) < 2.0, series


def test_operator_job_panels_show_each_jobs_namespace_on_real_prometheus(operator_prometheus: Any) -> None:
    """The finished-jobs and restarts panels against a real Prometheus scraping the operator's registry
    as the chart's ServiceMonitor does: the namespace picked is the TrainingJobs' (honor_labels keeps the
    counters' own over the target's, the operator's), and a namespace's first finished job and first
    restart show, since its job loop created the counters at 0 before them."""
    from torchjob_operator import metrics

    ns = "team-dashboard"  # counted in by no other test
    metrics.namespace_seen(ns)
    first = f'torchjob_operator_jobs_finished_total{{namespace="{ns}"}}'
    eventually(lambda: len(operator_prometheus.query(first)) == 2, 60, "the zero series scraped")
    metrics.JOBS_FINISHED.labels(namespace=ns, outcome="Succeeded").inc()
    metrics.RESTARTS.labels(namespace=ns, scope="gang", reason="disruption").inc()
    panels = {title: expr for title, expr in exprs(load())}

    def shown(title: str, label: str) -> dict[str, float] | None:
        query = grafana(panels[title].replace("$namespace", ns))
        values = {r["metric"][label]: float(r["value"][1]) for r in operator_prometheus.query(query)}
        return values if any(values.values()) else None

    outcomes = eventually(lambda: shown("Finished TrainingJobs by outcome", "outcome"), 60, "a job finished")
    assert outcomes["Succeeded"] > 0 and outcomes["Failed"] == 0, outcomes
    reasons = eventually(lambda: shown("Restarts by reason", "reason"), 60, "a restart")
    assert reasons["disruption"] > 0 and reasons["retryable_exit"] == 0, reasons
    # The operator's other series carry the target's namespace: the operator's own.
    (created,) = operator_prometheus.query("torchjob_operator_pods_created_total")
    assert created["metric"]["namespace"] == "torchjob-system"
