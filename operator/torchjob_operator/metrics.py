"""The operator's Prometheus metrics, in their own registry (served by main on --metrics-port)."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from torchjob_core import constants

REGISTRY = CollectorRegistry(auto_describe=True)

JOBS = Gauge("torchjob_operator_jobs", "TrainingJobs by phase.", ["phase"], registry=REGISTRY)
PODS_CREATED = Counter("torchjob_operator_pods_created_total", "Pods created.", registry=REGISTRY)
#: The outcomes of `JOBS_FINISHED`, and the scopes and reasons of `RESTARTS`.
OUTCOMES = constants.TERMINAL_PHASES
RESTART_SCOPES = ("gang", "node")
RESTART_REASONS = ("retryable_exit", "disruption")
JOBS_FINISHED = Counter(
    "torchjob_operator_jobs_finished_total",
    "TrainingJobs this operator moved to a terminal phase (outcome Succeeded or Failed), once per job.",
    ["namespace", "outcome"],
    registry=REGISTRY,
)
RESTARTS = Counter(
    "torchjob_operator_restarts_total",
    "Restarts started, once each: scope gang (every pod recreated) or node (an elastic node replaced "
    "alone); reason retryable_exit (counted against backoffLimit) or disruption (preemption, eviction, a "
    "lost or deleted pod; not counted).",
    ["namespace", "scope", "reason"],
    registry=REGISTRY,
)
RECONCILE = Histogram(
    "torchjob_operator_reconcile_duration_seconds",
    "Duration of one reconcile pass of one job.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
SUBMIT_TO_RUNNING = Histogram(
    "torchjob_operator_submit_to_running_seconds",
    "From TrainingJob creation to all ranks of its first attempt running.",
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600),
    registry=REGISTRY,
)
API_REQUESTS = Counter(
    "torchjob_operator_api_requests_total",
    "Kubernetes API requests made by the operator.",
    ["verb"],
    registry=REGISTRY,
)
API_RETRIES = Counter(
    "torchjob_operator_api_retries_total",
    "Operator API requests tried again: throttled (429), server_error (5xx) or connection (no answer).",
    ["reason"],
    registry=REGISTRY,
)
for _reason in ("throttled", "server_error", "connection"):
    API_RETRIES.labels(reason=_reason)

API_THROTTLE_WAIT = Counter(
    "torchjob_operator_api_client_throttle_seconds_total",
    "Seconds the operator's requests waited for its own client rate limit (--api-qps, --api-burst).",
    registry=REGISTRY,
)

PROGRESS_READS = Counter(
    "torchjob_operator_progress_reads_total",
    "Reads of rank 0's metrics endpoint for status.progress: result ok, empty (not training yet) or error.",
    ["result"],
    registry=REGISTRY,
)


def namespace_seen(namespace: str) -> None:
    """Create a namespace's job counters at 0 (a job loop's start): increase() and alerts then see a
    namespace's first finished job and first restart, not only the ones after."""
    for outcome in OUTCOMES:
        JOBS_FINISHED.labels(namespace=namespace, outcome=outcome)
    for scope in RESTART_SCOPES:
        for reason in RESTART_REASONS:
            RESTARTS.labels(namespace=namespace, scope=scope, reason=reason)


def set_phases(phases: Mapping[Any, str]) -> None:
    """Set the jobs gauge from every known job's phase (phases with no job read 0)."""
    tally = Tally(phases.values())
    for phase in (*constants.PHASES, ""):
        JOBS.labels(phase=phase or "Unknown").set(tally.get(phase, 0))
