"""Start-up on real pods: from `kubectl apply` to every rank's first training step, phase by phase.

For a TrainingJob that ran on a cluster (the node tier's example job, or any job on KUBECONFIG), it reads
the job, its pods and each pod's trainer log, and reports per pod:

- created -> scheduled -> trainer container started (the kubelet's part: sandbox, CNI, volumes; no image
  pull once the image is on the node);
- container start -> first step: the slowest rank of the pod, from its `start-up phases (seconds): ...;
  first step X s after process start` line (torchjob_trainer/startup.py), timestamped by the trainer;
- container start -> trainer process start: the launcher, its forkserver's imports and the torchrun
  agents' rendezvous (every pod's agent joining; a forked worker starts only after it);
- the rank's own rendezvous phase (`init_process_group`: the ranks' store and group) and rendezvous ->
  first step.

and for the job: TrainingJob created -> the last rank's first step. performance.md goal 12 (rendezvous
<= 5 s for a 2-pod CPU job) and goal 13 (pod Running -> first optimizer step <= 30 s) are printed beside
the figures. Timestamps from the API server have whole seconds, so pod figures are +-1 s.

    KUBECONFIG=... python benchmarks/startup_pods.py JOB -n NAMESPACE [--json out.json]

The e2e tier runs `report` on its example job and prints it (tests/e2e/test_e2e_trainingjob.py).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from torchjob_core.status import parse_time

GOALS = {"rendezvous_seconds": 5.0, "container_to_first_step_seconds": 30.0}
# One rank's phases line as the trainer logs it: "<time>Z INFO [ns/job rank R/W ...] logger: ...".
PHASES_LINE = re.compile(
    r"(?P<time>\d{4}-\d\d-\d\dT[\d:.]+Z) \w+ \[[^\]]*\brank (?P<rank>\d+)/\d+\b[^\]]*\] \S+ ?"
    r"start-up phases \(seconds\): (?P<phases>\{.*?\}); first step (?P<total>[\d.]+) s after process start"
    r"(?:, (?P<after_rdzv>[\d.]+) s after the rendezvous)?"
)
TRAINER = "trainer"


def rank_lines(log: str) -> list[dict[str, Any]]:
    """Every rank's phases line in one pod's log (first line per rank: a restart in place logs again)."""
    seen: dict[int, dict[str, Any]] = {}
    for m in PHASES_LINE.finditer(log):
        rank = int(m["rank"])
        seen.setdefault(
            rank,
            {
                "rank": rank,
                "first_step_at": parse_time(m["time"]),
                "phases": json.loads(m["phases"]),
                "process_to_first_step": float(m["total"]),
                "rendezvous_to_first_step": float(m["after_rdzv"]) if m["after_rdzv"] else None,
            },
        )
    return [seen[r] for r in sorted(seen)]


def _container_started(pod: Mapping[str, Any]) -> datetime | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == TRAINER:
            state = cs.get("state") or {}
            started = (state.get("running") or state.get("terminated") or {}).get("startedAt")
            return parse_time(started)
    return None


def _condition_time(pod: Mapping[str, Any], kind: str) -> datetime | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True" and c.get("lastTransitionTime"):
            return parse_time(c["lastTransitionTime"])
    return None


def _seconds(later: datetime | None, earlier: datetime | None) -> float | None:
    return None if later is None or earlier is None else round((later - earlier).total_seconds(), 3)


def pod_startup(pod: Mapping[str, Any], log: str) -> dict[str, Any]:
    """One pod's figures (seconds; None where the pod or its log lacks the moment)."""
    created = parse_time(pod["metadata"]["creationTimestamp"])
    scheduled = _condition_time(pod, "PodScheduled")
    started = _container_started(pod)
    ranks = rank_lines(log)
    last = max((r["first_step_at"] for r in ranks), default=None)
    rendezvous = [r["phases"].get("rendezvous") for r in ranks if r["phases"].get("rendezvous") is not None]
    after = [r["rendezvous_to_first_step"] for r in ranks if r["rendezvous_to_first_step"] is not None]
    to_step = _seconds(last, started)
    process = max((r["process_to_first_step"] for r in ranks), default=None)
    return {
        "pod": pod["metadata"]["name"],
        "ranks": [r["rank"] for r in ranks],
        "created_to_scheduled_seconds": _seconds(scheduled, created),
        "scheduled_to_container_seconds": _seconds(started, scheduled),
        "container_to_first_step_seconds": to_step,
        "container_to_process_seconds": None
        if to_step is None or process is None
        else round(to_step - process, 3),
        "process_to_first_step_seconds": process,
        "rendezvous_seconds": max(rendezvous, default=None),
        "rendezvous_to_first_step_seconds": max(after, default=None),
        "first_step_at": last.isoformat() if last else None,
        "phases": {str(r["rank"]): r["phases"] for r in ranks},
    }


def report(
    job: Mapping[str, Any], pods: Iterable[Mapping[str, Any]], log_of: Callable[[str], str]
) -> dict[str, Any]:
    """The job's figures from its pods (only those of its first attempt that ran) and their logs."""
    rows = [pod_startup(p, log_of(p["metadata"]["name"])) for p in pods]
    created = parse_time(job["metadata"]["creationTimestamp"])
    steps = [t for r in rows if (t := parse_time(r["first_step_at"])) is not None]
    return {
        "job": job["metadata"]["name"],
        "namespace": job["metadata"].get("namespace"),
        "pods": rows,
        "job_created_to_last_first_step_seconds": _seconds(max(steps), created) if steps else None,
        "goals": GOALS,
    }


def table(result: Mapping[str, Any]) -> str:
    cols = (
        ("pod", "pod", "{}"),
        ("created_to_scheduled_seconds", "sched", "{:.1f}"),
        ("scheduled_to_container_seconds", "->start", "{:.1f}"),
        ("container_to_first_step_seconds", "->step", "{:.1f}"),
        ("container_to_process_seconds", "->proc", "{:.1f}"),
        ("process_to_first_step_seconds", "proc->step", "{:.2f}"),
        ("rendezvous_seconds", "rdzv", "{:.2f}"),
        ("rendezvous_to_first_step_seconds", "rdzv->step", "{:.2f}"),
    )
    lines = ["  ".join(f"{title:>10}" for _, title, _ in cols)]
    for row in result["pods"]:
        cells = ["-" if row[key] is None else fmt.format(row[key]) for key, _, fmt in cols]
        lines.append("  ".join(f"{c:>10}" for c in cells))
    total = result["job_created_to_last_first_step_seconds"]
    lines.append(f"job created -> last rank's first step: {'-' if total is None else f'{total:.1f} s'}")
    lines.append(
        "goals: rendezvous <= {rendezvous_seconds:g} s; container start -> first step <= "
        "{container_to_first_step_seconds:g} s".format(**GOALS)
    )
    return "\n".join(lines)


def _kubectl(kubectl: str, *args: str) -> str:
    return subprocess.run([kubectl, *args], check=True, capture_output=True, text=True, timeout=60).stdout


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("job")
    p.add_argument("-n", "--namespace", default="default")
    p.add_argument("--kubectl", default="kubectl")
    p.add_argument("--attempt", type=int, default=0, help="gang attempt whose pods to read (default 0)")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    ns = ("-n", args.namespace)
    job = json.loads(_kubectl(args.kubectl, "get", "trainingjob", args.job, *ns, "-o", "json"))
    selector = f"torchjob.dev/job-name={args.job},torchjob.dev/attempt={args.attempt}"
    pods = json.loads(_kubectl(args.kubectl, "get", "pods", *ns, "-l", selector, "-o", "json"))["items"]
    result = report(job, pods, lambda pod: _kubectl(args.kubectl, "logs", pod, *ns, "-c", TRAINER))
    print(table(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
