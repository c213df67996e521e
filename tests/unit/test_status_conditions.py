"""Condition bookkeeping and pod observation."""

from __future__ import annotations

import datetime as dt

from torchjob_core import failure_policy, status
from torchjob_operator.observe import observe_pod

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=1)


def test_transition_time_moves_only_when_status_flips() -> None:
    conds = status.set_condition([], "Running", "True", reason="A", message="a", now=T0, generation=1)
    same = status.set_condition(conds, "Running", "True", reason="B", message="b", now=T1, generation=2)
    assert same[0]["lastTransitionTime"] == status.timestamp(T0)
    assert (same[0]["reason"], same[0]["observedGeneration"]) == ("B", 2)
    flipped = status.set_condition(same, "Running", "False", reason="C", message="c", now=T1, generation=2)
    assert flipped[0]["lastTransitionTime"] == status.timestamp(T1)
    assert conds[0]["reason"] == "A"  # inputs are not mutated


def test_phase_conditions_are_exclusive_and_created_stays() -> None:
    st = status.with_phase({}, "Created", "PodsCreated", "m", now=T0, generation=1)
    st = status.with_phase(st, "Pending", "PodsPending", "m", now=T0, generation=1)
    st = status.with_phase(st, "Running", "AllRanksRunning", "m", now=T1, generation=1)
    by_type = {c["type"]: c["status"] for c in st["conditions"]}
    assert by_type == {"Created": "True", "Pending": "False", "Running": "True"}
    assert st["phase"] == "Running" and st["reason"] == "AllRanksRunning"
    assert status.is_true(st, "Running") and not status.is_true(st, "Pending")


def test_backoff_doubles_and_caps() -> None:
    assert [failure_policy.backoff_seconds(n, 10) for n in (1, 2, 3)] == [10, 20, 40]
    assert failure_policy.backoff_seconds(50, 10) == 300


def pod_body(phase: str, **status_fields: object) -> dict[str, object]:
    return {
        "metadata": {
            "name": "j-node-1-r2",
            "labels": {
                "torchjob.dev/job-name": "j",
                "torchjob.dev/node-index": "1",
                "torchjob.dev/attempt": "2",
            },
        },
        "status": {"phase": phase, **status_fields},
    }


def test_observe_reads_labels_and_exit_code() -> None:
    obs = observe_pod(
        pod_body(
            "Failed", containerStatuses=[{"name": "trainer", "state": {"terminated": {"exitCode": 143}}}]
        )
    )
    assert (obs.job, obs.index, obs.attempt, obs.exit_code, obs.disrupted) == ("j", 1, 2, 143, False)


def test_observe_unschedulable_and_image_pull() -> None:
    unsched = observe_pod(
        pod_body(
            "Pending",
            conditions=[
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/4"}
            ],
        )
    )
    assert (unsched.reason, unsched.message) == ("Unschedulable", "0/4")
    pull = observe_pod(
        pod_body(
            "Pending",
            containerStatuses=[{"name": "trainer", "state": {"waiting": {"reason": "ImagePullBackOff"}}}],
        )
    )
    assert pull.reason == "ImagePullBackOff"
    creating = observe_pod(
        pod_body(
            "Pending",
            containerStatuses=[{"name": "trainer", "state": {"waiting": {"reason": "ContainerCreating"}}}],
        )
    )
    assert creating.reason == ""


def test_observe_disruptions() -> None:
    target = observe_pod(pod_body("Failed", conditions=[{"type": "DisruptionTarget", "status": "True"}]))
    evicted = observe_pod(pod_body("Failed", reason="Evicted"))
    assert target.disrupted and evicted.disrupted
    assert evicted.reason == "Evicted"


def test_observe_kueue_gate_and_kueue_stop() -> None:
    gated = pod_body(
        "Pending",
        conditions=[{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}],
    )
    gated["spec"] = {"schedulingGates": [{"name": "kueue.x-k8s.io/admission"}]}
    gated["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] = "team"  # type: ignore[index]
    obs = observe_pod(gated)
    assert obs.reason == "QueuedByKueue" and "LocalQueue team" in obs.message and not obs.disrupted
    # Kueue stops an evicted workload's pods with this condition, then deletes them.
    stop = {"type": "TerminationTarget", "status": "True", "reason": "WorkloadEvictedDueToPreempted"}
    stopped = observe_pod(pod_body("Running", conditions=[stop]))
    assert stopped.disrupted and stopped.reason == "WorkloadEvictedDueToPreempted"
