"""Typed operator settings: command-line flags and the knobs Kopf gets at startup."""

from __future__ import annotations

import argparse
import dataclasses
import secrets
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class RequestBudget:
    """A token bucket per TrainingJob so one job cannot monopolise the API server."""

    #: Tokens a job may spend at once: this many plus two per node (create + delete of each pod).
    burst_base: int = 20
    #: Steady refill, requests per second per job.
    per_second: float = 20.0

    def burst(self, nodes: int) -> int:
        return self.burst_base + 2 * nodes


@dataclasses.dataclass(frozen=True)
class ClientRateLimit:
    """The operator's own limit on its API requests across all jobs (client-go's QPS and burst), so a
    burst of job passes queues in the operator instead of meeting 429s from the server's fairness."""

    #: Steady requests per second; 0 turns the limit off. Measured (docs/operator.md): at 50, 100 jobs of
    #: 4 nodes took 3x the bare pods' time to Running, all of it waiting here; 200 at 1,000 jobs x 8 met no
    #: more 429s than 50 did.
    qps: float = 100.0
    #: Requests that may go at once after a quiet spell.
    burst: int = 200


@dataclasses.dataclass(frozen=True)
class ProgressSettings:
    """How often the operator reads rank 0's metrics for status.progress (docs/operator.md has the cost)."""

    #: Seconds between two reads of one job; 0 turns progress off.
    interval_seconds: float = 30.0
    #: Reads per second across all jobs (and so at most this many progress status writes per second).
    reads_per_second: float = 10.0
    #: A pod that has not answered by then is tried again after the interval.
    timeout_seconds: float = 2.0


@dataclasses.dataclass(frozen=True)
class Settings:
    #: Namespaces to watch; empty means the whole cluster.
    namespaces: tuple[str, ...] = ()
    #: Prometheus /metrics port; 0 disables it.
    metrics_port: int = 8080
    #: Liveness /healthz port; 0 disables it.
    health_port: int = 8081
    #: Kopf peering name for active/standby replicas; None with standalone=True.
    peering: str | None = None
    standalone: bool = False
    #: Peering priority: the highest live replica works, the others wait. Kopf pauses *every* replica
    #: when two share a priority, so by default each replica draws its own.
    priority: int = 0
    #: A job's loop runs at least this often even when nothing changes (a safety net, not the driver).
    resync_seconds: float = 60.0
    #: Quiet time after a wake-up to coalesce a burst of pod events into one pass.
    coalesce_seconds: float = 0.05
    #: Kopf watch server-side timeout: long enough to be cheap, short enough to recover from stuck watches.
    watch_server_timeout: int = 300
    #: How long the operator remembers its own creates/deletes before the watch reflects them.
    inflight_seconds: float = 30.0
    #: Job passes that may run at once across all jobs; the others wait for a slot, holding nothing. More
    #: passes than the client rate limit serves would only wait in it, each holding its rendered pods.
    max_concurrent_passes: int = 32
    budget: RequestBudget = dataclasses.field(default_factory=RequestBudget)
    client_rate: ClientRateLimit = dataclasses.field(default_factory=ClientRateLimit)
    progress: ProgressSettings = dataclasses.field(default_factory=ProgressSettings)
    verbose: bool = False


def parser() -> argparse.ArgumentParser:
    """The flags; each default is its dataclass field's, so a default is said once."""
    defaults, budget, rate, progress = Settings(), RequestBudget(), ClientRateLimit(), ProgressSettings()
    p = argparse.ArgumentParser(prog="torchjob-operator", description="Run the TrainingJob operator.")
    p.add_argument("--namespace", action="append", default=[], help="watch this namespace (repeatable)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--peering", default=None, help="Kopf peering name (for two replicas)")
    mode.add_argument("--standalone", action="store_true", help="no peering: the only replica")
    p.add_argument(
        "--priority", type=int, default=None, help="peering priority (default: random, so replicas differ)"
    )
    numbers: tuple[tuple[str, type, float, str], ...] = (
        ("--metrics-port", int, defaults.metrics_port, "Prometheus /metrics port (0 disables)"),
        ("--health-port", int, defaults.health_port, "liveness /healthz port (0 disables)"),
        ("--resync-seconds", float, defaults.resync_seconds, "longest wait between passes of a job"),
        ("--max-concurrent-passes", int, defaults.max_concurrent_passes, "job passes at once, across jobs"),
        ("--request-budget", float, budget.per_second, "API requests per second per job"),
        ("--api-qps", float, rate.qps, "API requests per second across jobs (0: no limit)"),
        ("--api-burst", int, rate.burst, "API requests that may go at once"),
        ("--progress-interval-seconds", float, progress.interval_seconds,
         "seconds between two reads of a running job's rank 0 metrics (0: no status.progress)"),
        ("--progress-reads-per-second", float, progress.reads_per_second,
         "progress reads (and their status writes) per second across all jobs"),
    )  # fmt: skip
    for flag, kind, default, text in numbers:
        p.add_argument(flag, type=kind, default=default, help=text)
    p.add_argument("--verbose", action="store_true")
    return p


def from_args(argv: Sequence[str] | None = None) -> Settings:
    args = parser().parse_args(argv)
    if args.resync_seconds <= 0:
        parser().error("--resync-seconds must be > 0")
    if args.max_concurrent_passes < 1:
        parser().error("--max-concurrent-passes must be >= 1")
    if args.request_budget <= 0:
        parser().error("--request-budget must be > 0")
    if args.api_qps < 0:
        parser().error("--api-qps must be >= 0")
    if args.api_burst < 1:
        parser().error("--api-burst must be >= 1")
    if args.progress_interval_seconds < 0:
        parser().error("--progress-interval-seconds must be >= 0")
    if args.progress_reads_per_second <= 0:
        parser().error("--progress-reads-per-second must be > 0")
    return Settings(
        namespaces=tuple(args.namespace),
        metrics_port=args.metrics_port,
        health_port=args.health_port,
        peering=args.peering,
        standalone=args.standalone or args.peering is None,
        priority=args.priority if args.priority is not None else secrets.randbelow(1_000_000) + 1,
        resync_seconds=args.resync_seconds,
        max_concurrent_passes=args.max_concurrent_passes,
        budget=RequestBudget(per_second=args.request_budget),
        client_rate=ClientRateLimit(qps=args.api_qps, burst=args.api_burst),
        progress=ProgressSettings(
            interval_seconds=args.progress_interval_seconds, reads_per_second=args.progress_reads_per_second
        ),
        verbose=args.verbose,
    )
