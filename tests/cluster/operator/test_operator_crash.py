"""SIGKILL the operator at random moments while it creates gangs and while it restarts them; a fresh
operator must converge with exactly one pod per node of the current attempt, no orphans and no spurious
restarts. The random delays are the fault injection; convergence is always polled."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from harness.polling import eventually

from .conftest import Jobs, OperatorProcess

JOBS, NODES, KILLS_PER_PHASE = 5, 3, 5


def converged(jobs: Jobs, name: str, attempt: int) -> bool:
    st = jobs.status(name)
    if st.get("phase") != "Running" or st.get("attempt") != attempt:
        return False
    return invariant_violations(jobs, name, attempt) == []


def invariant_violations(jobs: Jobs, name: str, attempt: int) -> list[str]:
    problems: list[str] = []
    live: dict[int, list[str]] = {}
    for pod in jobs.pods(name):
        labels: dict[str, Any] = pod.metadata.labels
        pod_attempt, index = int(labels["torchjob.dev/attempt"]), int(labels["torchjob.dev/node-index"])
        active = pod.status.phase in ("Pending", "Running") and pod.metadata.deletion_timestamp is None
        if pod_attempt > attempt:
            problems.append(f"{pod.metadata.name}: from a future attempt")
        elif pod_attempt < attempt and (active or pod.metadata.deletion_timestamp is not None):
            problems.append(f"{pod.metadata.name}: orphan of attempt {pod_attempt}")
        elif pod_attempt < attempt and pod.status.phase != "Failed":
            problems.append(f"{pod.metadata.name}: kept but not Failed")
        elif pod_attempt == attempt:
            live.setdefault(index, []).append(pod.metadata.name)
    if sorted(live) != list(range(NODES)) or any(len(v) != 1 for v in live.values()):
        problems.append(f"current attempt pods by index: {live}")
    return problems


def kill_at_random_points(start: Callable[[], OperatorProcess], rng: random.Random, kills: int) -> None:
    for _ in range(kills):
        op = start()
        time.sleep(rng.uniform(0.5, 4.0))  # fault injection: a random point in the operator's work
        op.kill()


def test_sigkill_during_creation_and_restarts_converges(
    start_operator: Callable[..., OperatorProcess], jobs: Jobs
) -> None:
    rng = random.Random(20260101)
    names = [f"crash-{i}" for i in range(JOBS)]
    for name in names:
        jobs.create(name, nodes=NODES)

    kill_at_random_points(start_operator, rng, KILLS_PER_PHASE)
    final = start_operator()
    for name in names:
        eventually(lambda n=name: converged(jobs, n, 0), 120, f"{name} converged on attempt 0")
    final.kill()

    # A retryable failure in every job, then more crashes while the operator restarts the gangs.
    for name in names:
        jobs.exit(f"{name}-node-1-r0", 137)
    kill_at_random_points(start_operator, rng, KILLS_PER_PHASE)
    final = start_operator()
    for name in names:
        eventually(lambda n=name: converged(jobs, n, 1), 180, f"{name} converged on attempt 1")
        st = jobs.status(name)
        assert st["restartCount"] == 1, f"{name}: spurious restarts {st}"
        assert invariant_violations(jobs, name, 1) == []
    assert "Traceback" not in final.output()
