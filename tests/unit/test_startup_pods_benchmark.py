"""benchmarks/startup_pods.py reads a pod's moments and its ranks' start-up lines (no cluster here)."""

from __future__ import annotations

from typing import Any

from harness.tools import load_script

LINE = (
    "2026-12-06T10:00:09.500Z INFO [ns/j rank {rank}/4 local {rank} node 0] torchjob_trainer.train: "
    'start-up phases (seconds): {{"forked": 0.08, "rendezvous": {rdzv}, "first_step": 0.1}}; '
    "first step {total} s after process start, 0.2 s after the rendezvous"
)


def pod(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "creationTimestamp": "2026-12-06T10:00:00Z"},
        "status": {
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-12-06T10:00:01Z"}
            ],
            "containerStatuses": [
                {"name": "trainer", "state": {"terminated": {"startedAt": "2026-12-06T10:00:03Z"}}}
            ],
        },
    }


def test_a_pods_figures_come_from_its_status_and_its_slowest_rank() -> None:
    bench = load_script("benchmarks/startup_pods.py", "startup_pods")
    log = "\n".join(
        ["noise", LINE.format(rank=0, rdzv=0.03, total=0.4), LINE.format(rank=1, rdzv=0.05, total=0.5)]
    )
    row = bench.pod_startup(pod("j-node-0-r0"), log)
    assert row["ranks"] == [0, 1]
    assert row["created_to_scheduled_seconds"] == 1.0
    assert row["scheduled_to_container_seconds"] == 2.0
    assert row["container_to_first_step_seconds"] == 6.5
    assert row["container_to_process_seconds"] == 6.0  # the launcher, its imports, the agents' rendezvous
    assert (row["rendezvous_seconds"], row["rendezvous_to_first_step_seconds"]) == (0.05, 0.2)

    job = {"metadata": {"name": "j", "namespace": "ns", "creationTimestamp": "2026-12-06T09:59:59Z"}}
    result = bench.report(job, [pod("j-node-0-r0")], lambda name: log)
    assert result["job_created_to_last_first_step_seconds"] == 10.5
    assert "job created -> last rank's first step: 10.5 s" in bench.table(result)


def test_a_pod_without_its_lines_reports_none() -> None:
    bench = load_script("benchmarks/startup_pods.py", "startup_pods")
    row = bench.pod_startup(pod("p"), "no start-up line here")
    assert row["ranks"] == [] and row["container_to_first_step_seconds"] is None
