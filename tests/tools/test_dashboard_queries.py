"""The Grafana dashboard: valid JSON whose PromQL names only metrics that really exist.

Trainer metric names are checked against a real scrape of a running rank, and every expression is
evaluated by a real Prometheus scraping that run: trainer panels must return data. The GPU utilisation
panels read NVIDIA dcgm-exporter's profiling fields: a Prometheus scraping fake dcgm-exporter output, with
its pod-mapping labels, shows that they select the TrainingJob's pods and no others.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from harness.polling import eventually
from prometheus_client.parser import text_string_to_metric_families
from torchjob_core import spec
from torchjob_core.render import meta
from torchrun.trainer_procs import scrape

from .conftest import SCRAPE_EVERY_SECOND, run_prometheus

DASHBOARD = Path(__file__).resolve().parents[2] / "charts" / "torchjob" / "files" / "dashboards"
METRIC = re.compile(r"\btorchjob_[a-z0-9_]+")
# What Grafana substitutes before sending a query; "All" is ".*" (the variables' allValue).
# Series a CPU trainer cannot export: NVML's GPU gauges and torch's CUDA allocator gauges exist only on a
# rank with a CUDA device (and NVML). Their names are checked against the trainer's own code instead
# (tests/unit/test_trainer_gpu.py scrapes them with NVML faked), and their queries must still parse and run.
GPU_ONLY = re.compile(r"\btorchjob_trainer_(?:gpu|cuda)_[a-z0-9_]+")
GRAFANA_VARS = {"$namespace": ".*", "$job": ".*", "$__rate_interval": "5s", "$__range": "1h"}
# NVIDIA dcgm-exporter's profiling (DCP) fields, the GPU utilisation signal (performance.md goal 15): the
# names are DCGM's field identifiers, as in dcgm-exporter's etc/dcp-metrics-included.csv. A DCGM name the
# dashboard uses must be one of these; no rank here has a GPU, so a fake exporter serves them.
DCGM = re.compile(r"\bDCGM_FI_[A-Z0-9_]+")
DCGM_FIELDS = {"DCGM_FI_PROF_SM_ACTIVE", "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "DCGM_FI_PROF_DRAM_ACTIVE"}
# What is not a metric name in a query: strings, label matchers, ranges, grouping and keywords.
STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
NOT_NAMES = re.compile(
    r"\{[^}]*\}|\[[^\]]*\]|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
)
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "or", "and", "unless", "bool"}
IDENT = re.compile(r"\b[A-Za-z_:][A-Za-z0-9_:]*\b(?!\s*\()")


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


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (the identifiers that are not functions, labels or
    keywords)."""
    rest = NOT_NAMES.sub(" ", STRINGS.sub(" ", expr))
    return {name for name in IDENT.findall(rest) if name not in KEYWORDS}


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
        "torchjob_trainer_startup_seconds{",  # process start -> first step, per rank
        "torchjob_operator_restarts_total",
        "torchjob_operator_submit_to_running_seconds_bucket",
        # finished jobs by outcome and restarts by reason, in the namespaces picked (the jobs' own)
        'sum by (outcome) (increase(torchjob_operator_jobs_finished_total{namespace=~"$namespace"}',
        'sum by (reason) (increase(torchjob_operator_restarts_total{namespace=~"$namespace"}',
        # GPU utilisation from DCGM's profiling fields, per GPU of the job's pods
        "DCGM_FI_PROF_SM_ACTIVE{",
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{",
        'pod=~"($job)-node-[0-9]+-r[0-9]+(-[0-9]+)?"',
    ):
        assert needle in text, needle


def test_every_metric_in_the_dashboard_is_torchjobs_or_a_dcgm_profiling_field() -> None:
    named = {m for _, e in exprs(load()) for m in metric_names(e)}
    assert {"torchjob_trainer_samples_total", "DCGM_FI_PROF_SM_ACTIVE"} <= named, named
    unknown = {m for m in named if not m.startswith("torchjob_") and m not in DCGM_FIELDS}
    assert not unknown, f"neither torchjob's nor an allowed DCGM field: {sorted(unknown)}"
    assert {m for m in named if DCGM.fullmatch(m)} <= DCGM_FIELDS


def test_dcgm_panels_say_what_they_need_and_that_nvml_is_liveness() -> None:
    for panel in load()["panels"]:
        text = " ".join(t["expr"] for t in panel.get("targets", []))
        if DCGM.search(text):
            assert "No data without dcgm-exporter" in panel["description"], panel["title"]
            assert panel["fieldConfig"]["defaults"]["unit"] == "percentunit", panel["title"]
        if "DCGM_FI_PROF_SM_ACTIVE" in text:
            assert "utilisation signal to trust" in panel["description"]
        if "torchjob_trainer_gpu_utilization_ratio" in text:
            assert "liveness" in panel["description"]


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
        if "torchjob_operator_" in expr or GPU_ONLY.search(expr) or DCGM.search(expr):
            # parses and evaluates; no operator, no GPU rank and no dcgm-exporter is scraped here
            prometheus.query(query)
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


# dcgm-exporter's output with its Kubernetes pod mapping on: the device labels (gpu, UUID, pci_bus_id,
# device, modelName, Hostname) and, for a GPU a container holds, that container's pod, namespace and
# container. A GPU no pod holds has no pod labels.
DCGM_NAMESPACE = "team-a"
DCGM_JOB = "prom-e2e"


def dcgm_job(name: str, namespace: str = DCGM_NAMESPACE) -> spec.TrainingJob:
    return spec.load(
        {
            "apiVersion": "torchjob.dev/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": name, "namespace": namespace, "uid": "u-1"},
            "spec": {"image": "img:1", "nodes": 2},
        }
    )


def dcgm_line(metric: str, value: float, gpu: int, host: str, pod: tuple[str, str] | None) -> str:
    labels = (
        f'gpu="{gpu}",UUID="GPU-{host}-{gpu}",pci_bus_id="00000000:{gpu + 7:02X}:00.0",'
        f'device="nvidia{gpu}",modelName="NVIDIA H100 80GB HBM3",Hostname="{host}"'
    )
    if pod:
        labels += f',container="trainer",namespace="{pod[0]}",pod="{pod[1]}"'
    return f"{metric}{{{labels}}} {value}"


def dcgm_exposition(series: list[tuple[int, str, tuple[str, str] | None]], value: float) -> str:
    """One exporter's page: each field of DCGM_FIELDS for each (gpu, host, pod)."""
    lines = []
    for i, metric in enumerate(sorted(DCGM_FIELDS)):
        lines += [f"# HELP {metric} DCGM profiling field.", f"# TYPE {metric} gauge"]
        lines += [dcgm_line(metric, value + i / 10, gpu, host, pod) for gpu, host, pod in series]
    return "\n".join(lines) + "\n"


def pod_of(
    job: str, index: int, attempt: int = 0, replacement: int = 0, ns: str = DCGM_NAMESPACE
) -> tuple[str, str]:
    return ns, meta.pod_name(dcgm_job(job, ns), index, attempt, replacement)


# Two exporters (GPU nodes). Prometheus scrapes node a as a ServiceMonitor with honorLabels does (the
# workload's pod and namespace stay), node b as one without it, as dcgm-exporter's chart does by default
# (Prometheus renames them exported_pod and exported_namespace and puts the exporter's own pod on). Each
# holds one GPU of the job and GPUs that must not show: another job's, a job whose name starts with this
# one's, the same pod name in another namespace, a GPU no pod holds.
DCGM_PAGES = {
    "/node-a": dcgm_exposition(
        [
            (0, "gpu-node-a", pod_of(DCGM_JOB, 0)),
            (1, "gpu-node-a", pod_of("other", 0)),
            (2, "gpu-node-a", pod_of(f"{DCGM_JOB}-node-1", 0)),
            (3, "gpu-node-a", pod_of(DCGM_JOB, 0, ns="team-b")),
            (4, "gpu-node-a", None),
        ],
        0.5,
    ),
    "/node-b": dcgm_exposition(
        [
            (0, "gpu-node-b", pod_of(DCGM_JOB, 1, attempt=2, replacement=1)),
            (1, "gpu-node-b", pod_of("other", 1)),
            (2, "gpu-node-b", pod_of(DCGM_JOB, 1, ns="team-b")),
            (3, "gpu-node-b", None),
        ],
        0.25,
    ),
}
# The target labels a ServiceMonitor gives each dcgm-exporter pod.
EXPORTER_TARGET = {"namespace": "gpu-operator", "container": "nvidia-dcgm-exporter"}


@pytest.fixture(scope="module")
def dcgm_prometheus(prometheus_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    class Pages(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = DCGM_PAGES.get(self.path, "").encode()
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    target = f"127.0.0.1:{httpd.server_address[1]}"

    def job(name: str, path: str, honor: bool) -> dict[str, Any]:
        labels = {**EXPORTER_TARGET, "pod": f"nvidia-dcgm-exporter-{path[-1]}"}
        return {
            "job_name": name,
            "metrics_path": path,
            "honor_labels": honor,
            "static_configs": [{"targets": [target], "labels": labels}],
        }

    config = {
        "global": SCRAPE_EVERY_SECOND,
        "scrape_configs": [job("dcgm-honor", "/node-a", True), job("dcgm-default", "/node-b", False)],
    }
    try:
        with run_prometheus(prometheus_bin, config, tmp_path_factory.mktemp("dcgm")) as server:
            eventually(lambda: len(server.query("up == 1")) == 2, 60, "both exporters scraped")
            yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def dcgm_panels() -> dict[str, str]:
    return {title: expr for title, expr in exprs(load()) if DCGM.search(expr)}


def test_dcgm_panels_show_the_jobs_gpus_only_on_real_prometheus(dcgm_prometheus: Any) -> None:
    """Each DCGM panel, for the job and namespace picked, shows the GPUs of that job's pods, scraped with
    or without honorLabels, and none of the other series on the same exporters."""
    panels = dcgm_panels()
    assert len(panels) == 3, sorted(panels)
    node_0, node_1 = pod_of(DCGM_JOB, 0)[1], pod_of(DCGM_JOB, 1, attempt=2, replacement=1)[1]
    for title, expr in panels.items():
        query = grafana(expr.replace("$namespace", DCGM_NAMESPACE).replace("$job", DCGM_JOB))
        (metric,) = set(DCGM.findall(expr))
        offset = sorted(DCGM_FIELDS).index(metric) / 10
        result = eventually(lambda q=query: (r := dcgm_prometheus.query(q)) and len(r) >= 2 and r, 60, title)
        shown = {(r["metric"]["namespace"], r["metric"]["pod"], r["metric"]["gpu"]): r for r in result}
        assert set(shown) == {(DCGM_NAMESPACE, node_0, "0"), (DCGM_NAMESPACE, node_1, "0")}, (title, shown)
        assert float(shown[(DCGM_NAMESPACE, node_0, "0")]["value"][1]) == pytest.approx(0.5 + offset)
        assert float(shown[(DCGM_NAMESPACE, node_1, "0")]["value"][1]) == pytest.approx(0.25 + offset)


def test_dcgm_panels_take_grafanas_all_and_multi_values_on_real_prometheus(dcgm_prometheus: Any) -> None:
    """ "All" (`.*`) and a multi-select (`(a|b)`, as Grafana formats it for a regex) select the jobs'
    pods; neither matches the exporters' own pods or a GPU no pod holds."""
    expr = dcgm_panels()["SM active per GPU (DCGM)"]

    def pods(namespace: str, job: str) -> set[tuple[str, str]]:
        query = grafana(expr.replace("$namespace", namespace).replace("$job", job))
        return {(r["metric"]["namespace"], r["metric"]["pod"]) for r in dcgm_prometheus.query(query)}

    everything = eventually(lambda: (p := pods(".*", ".*")) and len(p) == 7 and p, 60, "all jobs' pods")
    assert not any(pod.startswith("nvidia-dcgm-exporter") for _, pod in everything), everything
    both = pods(DCGM_NAMESPACE, f"({DCGM_JOB}|other)")
    assert {pod.split("-node-")[0] for _, pod in both} == {DCGM_JOB, "other"}, both
    assert len(both) == 4, both
