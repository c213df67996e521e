"""decide(): every policy path, one table row each."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest
from torchjob_core import spec
from torchjob_operator import reconcile
from torchjob_operator.observe import PodObs

T0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


def ts(seconds: float) -> str:
    return (T0 + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_job(
    nodes: int = 2,
    *,
    elastic: bool = False,
    gang: bool = False,
    checkpoint: dict[str, Any] | None = None,
    **run_policy: Any,
) -> spec.TrainingJob:
    body: dict[str, Any] = {
        "apiVersion": "torchjob.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "j", "namespace": "ns", "uid": "u", "generation": 3},
        "spec": {"image": "img", "nodes": nodes, "runPolicy": {"backoffSeconds": 10, **run_policy}},
    }
    if elastic:
        body["spec"]["elastic"] = {"minNodes": 1, "maxNodes": nodes}
    if gang:
        body["spec"]["scheduling"] = {"gang": True}
    if checkpoint is not None:
        body["spec"]["checkpoint"] = checkpoint
    return spec.load(body)


ON_A_CLAIM = {"storage": {"size": "10Gi"}}


def pod(index: int, phase: str = "Running", attempt: int = 0, **kw: Any) -> PodObs:
    return PodObs(name=f"j-node-{index}-r{attempt}", job="j", index=index, attempt=attempt, phase=phase, **kw)


def status(phase: str, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "phase": phase,
        "reason": "X",
        "attempt": 0,
        "restartCount": 0,
        "startTime": ts(0),
    }
    base.update(kw)
    return base


def decide(job: spec.TrainingJob, pods: list[PodObs], st: dict[str, Any], at: float = 1) -> reconcile.Plan:
    return reconcile.decide(job, pods, st, T0 + dt.timedelta(seconds=at))


def test_fresh_job_creates_every_pod_and_reports_created() -> None:
    plan = decide(make_job(3, checkpoint={"storage": {"existingClaim": "c"}}), [], {})
    assert plan.create == [(0, 0, 0), (1, 0, 0), (2, 0, 0)]
    assert plan.ensure_service and not plan.ensure_podgroup
    assert plan.status["phase"] == "Created"
    assert plan.status["startTime"] == ts(1)
    assert plan.status["observedGeneration"] == 3
    assert [c["type"] for c in plan.status["conditions"]] == ["Created"]
    assert [(e.type, e.reason) for e in plan.events] == [("Normal", "PodsCreated")]


def test_checkpoint_storage_ensures_its_claim_with_the_pods() -> None:
    plan = decide(make_job(2, checkpoint=ON_A_CLAIM), [], {})
    assert plan.ensure_claim and plan.create
    assert not decide(make_job(2, checkpoint={"storage": {"existingClaim": "c"}}), [], {}).ensure_claim
    assert not decide(make_job(2), [], {}).ensure_claim


def test_dra_gpus_ensure_their_claim_template_with_the_pods_and_cost_one_request() -> None:
    from torchjob_operator import actuate

    body = make_job(2)
    dra = dataclasses.replace(
        body,
        spec=dataclasses.replace(
            body.spec,
            resources=dataclasses.replace(
                body.spec.resources, gpus_per_node=2, gpu_device_class_name="gpu.x"
            ),
        ),
    )
    plan = decide(dra, [], {})
    assert plan.ensure_claim_template and plan.create
    plain = decide(make_job(2), [], {})
    assert not plain.ensure_claim_template
    # The template is one request more than the same plan without it, and only for DRA jobs.
    assert actuate.cost(plan, True) == actuate.cost(plain, True) + 1


def test_ephemeral_checkpoints_say_so_with_the_first_pods() -> None:
    plan = decide(make_job(2), [], {})
    cond = next(c for c in plan.status["conditions"] if c["type"] == "CheckpointsEphemeral")
    assert (cond["status"], cond["reason"]) == ("True", "CheckpointsInEmptyDir")
    assert "an emptyDir at /checkpoints" in cond["message"]
    assert [(e.type, e.reason) for e in plan.events] == [
        ("Warning", "CheckpointsInEmptyDir"),
        ("Normal", "PodsCreated"),
    ]
    # The next pass keeps it and says nothing again.
    again = decide(make_job(2), [pod(0, "Pending"), pod(1, "Pending")], plan.status, at=2)
    assert reconcile_cond(again.status)["status"] == "True"
    assert all(e.reason != "CheckpointsInEmptyDir" for e in again.events)


def test_storage_added_later_turns_the_condition_false() -> None:
    first = decide(make_job(2), [], {})
    later = decide(make_job(2, checkpoint=ON_A_CLAIM), [pod(0), pod(1)], first.status, at=5)
    cond = reconcile_cond(later.status)
    assert (cond["status"], cond["reason"]) == ("False", "CheckpointsPersistent")
    assert "PersistentVolumeClaim j-checkpoints" in cond["message"]


def reconcile_cond(st: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in st["conditions"] if c["type"] == "CheckpointsEphemeral")


def test_gang_job_ensures_the_podgroup() -> None:
    assert decide(make_job(2, gang=True), [], {}).ensure_podgroup


def test_created_pods_not_seen_yet_are_created_again_idempotently() -> None:
    plan = decide(make_job(2), [pod(0, "Pending")], status("Created"))
    assert plan.create == [(1, 0, 0)]
    assert plan.status["phase"] == "Created"  # unchanged: no new event
    assert plan.events == []


def test_created_to_pods_pending_writes_the_status_without_an_event() -> None:
    created = decide(make_job(2), [], {}).status
    plan = decide(make_job(2), [pod(0, "Pending"), pod(1, "Running")], created)
    assert (plan.status["phase"], plan.status["reason"]) == ("Pending", "PodsPending")
    assert plan.events == []  # quiet progress: one status write, no Event write per job


@pytest.mark.parametrize(
    ("pods", "phase", "reason"),
    [
        ([pod(0, "Pending"), pod(1, "Running")], "Pending", "PodsPending"),
        (
            [pod(0, "Pending", reason="Unschedulable", message="0/4 nodes"), pod(1)],
            "Pending",
            "Unschedulable",
        ),
        ([pod(0, "Pending", reason="ImagePullBackOff"), pod(1, "Pending")], "Pending", "ImagePullBackOff"),
        ([pod(0), pod(1)], "Running", "AllRanksRunning"),
        ([pod(0), pod(1, "Succeeded")], "Running", "AllRanksRunning"),
        ([pod(0, "Succeeded"), pod(1, "Succeeded")], "Succeeded", "JobSucceeded"),
    ],
)
def test_phase_follows_the_pods(pods: list[PodObs], phase: str, reason: str) -> None:
    plan = decide(make_job(2), pods, status("Created"))
    assert (plan.status["phase"], plan.status["reason"]) == (phase, reason)
    assert plan.create == []


def test_unschedulable_is_a_warning_event_with_the_pod_message() -> None:
    plan = decide(
        make_job(2),
        [pod(0, "Pending", reason="Unschedulable", message="0/4 nodes"), pod(1)],
        status("Created"),
    )
    assert plan.events == [reconcile.Event("Warning", "Unschedulable", "Pod j-node-0-r0: 0/4 nodes")]


def test_a_gang_pending_reason_names_the_member_that_does_not_fit() -> None:
    waiting = "pod group is unschedulable, waiting for minCount pods from a gang to be scheduled"
    short = "0/7 nodes are available: 2 Insufficient nvidia.com/gpu."
    pods = [
        pod(0, "Pending", reason="Unschedulable", message=waiting),
        pod(1, "Pending", reason="Unschedulable", message=short),
    ]
    plan = decide(make_job(2, gang=True), pods, status("Created"))
    assert (plan.status["reason"], plan.status["message"]) == ("Unschedulable", f"Pod j-node-1-r0: {short}")


def test_running_sets_running_time_and_counts() -> None:
    plan = decide(make_job(2), [pod(0), pod(1)], status("Pending"), at=5)
    assert plan.status["runningTime"] == ts(5)
    assert plan.status["nodes"] == {"total": 2, "pending": 0, "running": 2, "succeeded": 0, "failed": 0}
    assert plan.status["nodesReady"] == "2/2"
    again = decide(make_job(2), [pod(0), pod(1)], plan.status, at=9)
    assert again.status == plan.status and again.events == []


def test_success_sets_completion_and_cleans_running_pods() -> None:
    plan = decide(
        make_job(2),
        [pod(0, "Succeeded"), pod(1, "Succeeded"), pod(0, "Failed", attempt=-1)],
        status("Running"),
    )
    assert plan.status["completionTime"] == ts(1)
    conds = {c["type"]: c["status"] for c in plan.status["conditions"]}
    assert conds == {"Created": "True", "Succeeded": "True"}
    assert plan.delete == []


def test_elastic_succeeds_when_the_first_node_succeeds() -> None:
    plan = decide(make_job(3, elastic=True), [pod(0, "Succeeded"), pod(1), pod(2)], status("Running"))
    assert plan.status["phase"] == "Succeeded"
    assert plan.delete == ["j-node-1-r0", "j-node-2-r0"]  # cleanPodPolicy Running


def test_elastic_success_names_the_pod_and_the_default_policy() -> None:
    plan = decide(make_job(3, elastic=True), [pod(0), pod(1, "Succeeded"), pod(2)], status("Running"))
    assert plan.status["message"] == (
        "Pod j-node-1-r0 succeeded (successPolicy AnyNode, the elastic default: the first node to finish "
        "ends the job), before node(s) 0, 2."
    )


NODE0_DONE = (
    "Pod j-node-0-r0 succeeded (successPolicy Node0: node 0 finishing ends the job), before node(s) 1, 2."
)


@pytest.mark.parametrize(
    ("clean", "deleted"),
    [
        ("Running", ["j-node-1-r0", "j-node-2-r0"]),
        ("All", ["j-node-0-r0", "j-node-1-r0", "j-node-2-r0"]),
        ("None", []),
    ],
)
def test_node0_success_ends_the_job_while_the_others_linger(clean: str, deleted: list[str]) -> None:
    job = make_job(3, successPolicy="Node0", cleanPodPolicy=clean)
    pods = [pod(0, "Succeeded"), pod(1), pod(2, "Pending")]
    plan = decide(job, pods, status("Running", reason="AllRanksRunning"), at=7)
    assert (plan.status["phase"], plan.status["reason"]) == ("Succeeded", "JobSucceeded")
    assert plan.status["message"] == NODE0_DONE
    assert plan.status["completionTime"] == ts(7)
    cond = next(c for c in plan.status["conditions"] if c["type"] == "Succeeded")
    assert (cond["status"], cond["reason"], cond["message"]) == ("True", "JobSucceeded", NODE0_DONE)
    assert plan.events == [reconcile.Event("Normal", "JobSucceeded", NODE0_DONE)]
    assert plan.delete == deleted and plan.create == []
    # The next pass (the lingering pods still terminating) keeps it and says nothing again.
    again = decide(job, [dataclasses.replace(p, deleting=True) if p.index else p for p in pods], plan.status)
    assert again.status["phase"] == "Succeeded" and again.events == []


@pytest.mark.parametrize(
    ("run_policy", "elastic", "pods", "phase"),
    [
        ({}, False, [pod(0, "Succeeded"), pod(1)], "Running"),  # AllNodes, the default: node 1 still runs
        ({"successPolicy": "AllNodes"}, True, [pod(0, "Succeeded"), pod(1)], "Running"),
        ({"successPolicy": "Node0"}, False, [pod(0), pod(1, "Succeeded")], "Running"),  # not node 0
        ({"successPolicy": "Node0"}, True, [pod(0), pod(1, "Succeeded")], "Running"),
        ({"successPolicy": "AnyNode"}, False, [pod(0), pod(1, "Succeeded")], "Succeeded"),
        ({"successPolicy": "Node0"}, True, [pod(0, "Succeeded"), pod(1)], "Succeeded"),
    ],
)
def test_success_policy_per_job_kind(
    run_policy: dict[str, Any], elastic: bool, pods: list[PodObs], phase: str
) -> None:
    plan = decide(make_job(2, elastic=elastic, **run_policy), pods, status("Running"))
    assert plan.status["phase"] == phase


def test_a_peer_failing_after_node0_succeeded_restarts_nothing() -> None:
    pods = [pod(0, "Succeeded"), pod(1, "Failed", exit_code=1)]
    plan = decide(make_job(2, successPolicy="Node0"), pods, status("Running"))
    assert (plan.status["phase"], plan.status["reason"]) == ("Succeeded", "JobSucceeded")
    assert plan.status["attempt"] == 0 and "lastFailure" not in plan.status
    assert plan.delete == []  # the failed pod keeps its logs
    # Every node must succeed under AllNodes: the same pods fail the job.
    failed = decide(make_job(2), pods, status("Running"))
    assert (failed.status["phase"], failed.status["reason"]) == ("Failed", "PermanentExitCode")


def test_success_policy_edited_on_a_running_job_applies_at_the_next_pass() -> None:
    pods = [pod(0, "Succeeded"), pod(1)]
    before = decide(make_job(2), pods, status("Running"))
    assert before.status["phase"] == "Running"
    after = decide(make_job(2, successPolicy="Node0"), pods, before.status, at=2)
    assert after.status["phase"] == "Succeeded"


def test_elastic_replaces_a_lost_node_alone_and_keeps_running() -> None:
    job = make_job(3, elastic=True)
    pods = [pod(0), pod(1, "Failed", exit_code=137), pod(2)]
    plan = decide(job, pods, status("Running"), at=100)
    assert (plan.status["phase"], plan.status["reason"]) == ("Running", "NodeReplaced")
    assert (plan.status["attempt"], plan.status["restartCount"]) == (0, 1)
    assert plan.status["nodeReplacements"] == [0, 1, 0]
    assert plan.status["replacingNodes"] == [1]
    assert plan.status["lastRestartTime"] == ts(100)
    assert plan.delete == [] and plan.create == []  # the survivors keep training
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "NodeReplaced")]
    assert plan.requeue_after == 10

    waiting = decide(job, pods, plan.status, at=105)  # the backoff first
    assert waiting.create == [] and waiting.requeue_after == 5
    # The missing replacement is not a second loss.
    assert (waiting.status["restartCount"], waiting.status["nodeReplacements"]) == (1, [0, 1, 0])
    assert waiting.events == [] and waiting.status["reason"] == "NodeReplaced"

    ready = decide(job, pods, plan.status, at=110)
    assert ready.create == [(1, 0, 1)]
    assert ready.status["phase"] == "Running" and ready.events == []

    replacement = PodObs(name="j-node-1-r0-1", job="j", index=1, attempt=0, phase="Pending", replacement=1)
    starting = decide(job, [*pods, replacement], ready.status, at=111)
    assert starting.create == [] and starting.delete == []
    assert (starting.status["phase"], starting.status["reason"]) == ("Running", "NodeReplaced")
    assert starting.status["replacingNodes"] == []  # seen: a loss of it from now on is a new loss
    assert starting.status["nodesReady"] == "2/3"

    running = dataclasses.replace(replacement, phase="Running")
    back = decide(job, [*pods, running], starting.status, at=120)
    assert (back.status["phase"], back.status["reason"]) == ("Running", "AllRanksRunning")


@pytest.mark.parametrize(
    ("pods", "why"),
    [
        ([pod(0, "Failed", exit_code=137), pod(1), pod(2)], "node 0 hosts the rendezvous"),
        ([pod(0), pod(1, "Failed", exit_code=137), pod(2, "Pending")], "fewer than minNodes running"),
        ([pod(0), pod(1, "Failed", exit_code=137), pod(2, "Failed", exit_code=137)], "minNodes 2"),
    ],
)
def test_elastic_restarts_the_gang_when_the_rest_cannot_go_on(pods: list[PodObs], why: str) -> None:
    body_job = make_job(3, elastic=True)
    job = dataclasses.replace(
        body_job,
        spec=dataclasses.replace(
            body_job.spec, elastic=dataclasses.replace(body_job.spec.elastic, min_nodes=2)
        ),
    )
    plan = decide(job, pods, status("Running", nodeReplacements=[0, 2, 0]), at=100)
    assert plan.status["phase"] == "Restarting", why
    assert plan.status["attempt"] == 1
    assert plan.status["nodeReplacements"] == [] and plan.status["replacingNodes"] == []


def test_elastic_replacement_counts_against_the_backoff_limit() -> None:
    pods = [pod(0), pod(1, "Failed", exit_code=137)]
    plan = decide(make_job(2, elastic=True, backoffLimit=1), pods, status("Running", restartCount=1))
    assert (plan.status["phase"], plan.status["reason"]) == ("Failed", "BackoffLimitExceeded")


def test_elastic_replaces_a_vanished_node_once() -> None:
    job = make_job(2, elastic=True)
    plan = decide(job, [pod(0)], status("Running"), at=100)
    assert plan.status["reason"] == "NodeReplaced" and plan.status["nodeReplacements"] == [0, 1]
    again = decide(job, [pod(0)], plan.status, at=101)
    assert again.status["restartCount"] == 1 and again.status["nodeReplacements"] == [0, 1]


def test_a_gang_restart_retires_replaced_pods_with_the_rest() -> None:
    job = make_job(2, elastic=True)
    replaced = PodObs(name="j-node-1-r0-1", job="j", index=1, attempt=0, phase="Running", replacement=1)
    st = status("Running", nodeReplacements=[0, 1], replacingNodes=[])
    plan = decide(job, [pod(0, "Failed", exit_code=143), pod(1, "Failed", exit_code=137), replaced], st)
    assert plan.status["phase"] == "Restarting"
    assert plan.delete == ["j-node-1-r0-1"]


def test_retryable_exit_restarts_the_gang_without_creating() -> None:
    pods = [pod(0, "Failed", exit_code=137), pod(1)]
    plan = decide(make_job(2), pods, status("Running"), at=100)
    assert plan.status["phase"] == "Restarting"
    assert (plan.status["attempt"], plan.status["restartCount"]) == (1, 1)
    assert plan.status["lastExitCode"] == 137
    assert plan.status["lastRestartTime"] == ts(100)
    assert plan.create == []
    assert plan.delete == ["j-node-1-r0"]  # the failed pod stays for its logs
    assert plan.requeue_after == 10
    assert plan.events[0].type == "Warning" and plan.events[0].reason == "RetryableExitCode"


def test_restart_waits_for_backoff_then_old_pods_then_creates() -> None:
    st = status("Restarting", attempt=1, restartCount=2, lastRestartTime=ts(100))
    old = [pod(0, "Failed", exit_code=137), pod(1)]
    waiting = decide(make_job(2), old, st, at=110)
    assert waiting.create == [] and waiting.requeue_after == 10  # backoff 10 * 2**(2-1)
    assert waiting.delete == ["j-node-1-r0"]
    leaving = decide(make_job(2), [old[0], pod(1, deleting=True)], st, at=121)
    assert leaving.create == [] and leaving.delete == []
    ready = decide(make_job(2), [old[0]], st, at=121)
    assert ready.create == [(0, 1, 0), (1, 1, 0)]
    assert ready.status["phase"] == "Pending" and ready.status["reason"] == "PodsCreated"


def test_restart_does_not_wait_for_ended_pods_a_finalizer_holds() -> None:
    # Kueue keeps its finalizer on the pods it stopped until the group has replacements for them.
    st = status("Restarting", attempt=1, restartCount=1, disruptions=1, lastRestartTime=ts(100))
    held = [pod(0, "Failed", exit_code=143, deleting=True), pod(1, "Failed", exit_code=143, deleting=True)]
    plan = decide(make_job(2), held, st, at=121)
    assert plan.create == [(0, 1, 0), (1, 1, 0)]


def test_stale_running_pods_are_deleted_even_when_not_restarting() -> None:
    plan = decide(
        make_job(1), [pod(0, attempt=0), pod(0, "Pending", attempt=1)], status("Pending", attempt=1)
    )
    assert plan.delete == ["j-node-0-r0"]


@pytest.mark.parametrize(
    ("failed", "reason"),
    [
        (pod(0, "Failed", exit_code=1), "PermanentExitCode"),
        (pod(0, "Failed", exit_code=2), "PermanentExitCode"),
    ],
)
def test_permanent_exit_fails_at_once(failed: PodObs, reason: str) -> None:
    plan = decide(make_job(2), [failed, pod(1)], status("Running"))
    assert (plan.status["phase"], plan.status["reason"]) == ("Failed", reason)
    assert plan.status["restartCount"] == 0
    assert plan.delete == ["j-node-1-r0"]
    assert plan.events[0].type == "Warning"


@pytest.mark.parametrize(
    ("code", "run_policy", "phase"),
    [
        (143, {}, "Restarting"),
        (200, {}, "Restarting"),
        (42, {"retryableExitCodes": [42]}, "Restarting"),
        (137, {"retryableExitCodes": [143], "permanentExitCodes": [137]}, "Failed"),
        (130, {"permanentExitCodes": [130]}, "Failed"),
    ],
)
def test_exit_code_policy(code: int, run_policy: dict[str, Any], phase: str) -> None:
    plan = decide(make_job(1, **run_policy), [pod(0, "Failed", exit_code=code)], status("Running"))
    assert plan.status["phase"] == phase


@pytest.mark.parametrize(
    "disrupted",
    [
        pod(0, "Failed", exit_code=1, disrupted=True, reason="DisruptionTarget"),
        pod(0, "Failed", disrupted=True, reason="Evicted"),
        pod(0, "Running", deleting=True),
    ],
)
def test_disruptions_are_retryable(disrupted: PodObs) -> None:
    plan = decide(make_job(2), [disrupted, pod(1)], status("Running"))
    assert (plan.status["phase"], plan.status["reason"]) == ("Restarting", "PodDisrupted")


def test_a_disruption_is_not_counted_against_the_backoff_limit() -> None:
    job = make_job(2, backoffLimit=1)
    evicted = pod(0, "Failed", exit_code=143, disrupted=True, reason="DisruptionTarget")
    # The job already used its one counted restart, and was disrupted twice before.
    st = status("Running", attempt=3, restartCount=3, disruptions=2)
    plan = decide(job, [dataclasses.replace(evicted, attempt=3), pod(1, attempt=3)], st, at=100)
    assert (plan.status["phase"], plan.status["reason"]) == ("Restarting", "PodDisrupted")
    assert (plan.status["restartCount"], plan.status["disruptions"]) == (4, 3)
    assert "not counted against backoffLimit" in plan.status["message"]
    assert plan.requeue_after == 10  # the backoff grows with counted restarts only (1 here)

    crashed = decide(job, [pod(0, "Failed", attempt=4, exit_code=137)], dict(plan.status, attempt=4))
    assert (crashed.status["phase"], crashed.status["reason"]) == ("Failed", "BackoffLimitExceeded")
    assert "after 1 counted restarts" in crashed.status["message"]


def test_a_peer_failing_because_of_a_disruption_is_not_permanent() -> None:
    # A preempted pod takes its rank away; the peer's collective fails with the program's own exit 1.
    preempted = pod(0, "Running", deleting=True, disrupted=True)
    plan = decide(make_job(2), [preempted, pod(1, "Failed", exit_code=1)], status("Running"))
    assert (plan.status["phase"], plan.status["reason"]) == ("Restarting", "PodDisrupted")
    assert plan.status["message"].startswith("Pod j-node-0-r0 was disrupted")
    assert plan.status["disruptions"] == 1 and plan.status["lastExitCode"] == 1


def test_a_retryable_exit_counts_and_grows_the_backoff() -> None:
    st = status("Running", restartCount=3, disruptions=2)
    plan = decide(make_job(2), [pod(0, "Failed", exit_code=137), pod(1)], st)
    assert (plan.status["restartCount"], plan.status["disruptions"]) == (4, 2)
    assert "restart 2/3" in plan.status["message"] and plan.requeue_after == 20


def test_a_pod_vanishing_while_running_restarts() -> None:
    plan = decide(make_job(2), [pod(1)], status("Running"))
    assert plan.status["phase"] == "Restarting" and plan.status["disruptions"] == 1
    assert plan.create == []
    assert plan.unconfirmed  # only the index's word for it: the loop confirms with the API server


def test_a_failure_with_a_failed_pod_needs_no_confirmation() -> None:
    plan = decide(make_job(2), [pod(0, "Failed", exit_code=137)], status("Running"))
    assert plan.status["phase"] == "Restarting" and not plan.unconfirmed


def test_a_pod_missing_before_running_is_just_created() -> None:
    plan = decide(make_job(2), [pod(1)], status("Pending"))
    assert plan.create == [(0, 0, 0)]


def test_backoff_limit_exhausted_fails() -> None:
    st = status("Running", attempt=2, restartCount=2)
    plan = decide(make_job(1, backoffLimit=2), [pod(0, "Failed", attempt=2, exit_code=137)], st)
    assert (plan.status["phase"], plan.status["reason"]) == ("Failed", "BackoffLimitExceeded")


def test_active_deadline_fails_and_requeues_before() -> None:
    job = make_job(1, activeDeadlineSeconds=60)
    before = decide(job, [pod(0)], status("Running"), at=30)
    assert before.status["phase"] == "Running" and before.requeue_after == 30
    after = decide(job, [pod(0)], status("Running"), at=60)
    assert (after.status["phase"], after.status["reason"]) == ("Failed", "DeadlineExceeded")
    assert after.delete == ["j-node-0-r0"]


def test_startup_deadline_only_counts_until_running() -> None:
    job = make_job(1, startupDeadlineSeconds=20)
    pending = decide(job, [pod(0, "Pending")], status("Pending"), at=25)
    assert (pending.status["phase"], pending.status["reason"]) == ("Failed", "StartupDeadlineExceeded")
    running = decide(job, [pod(0)], status("Running"), at=25)
    assert running.status["phase"] == "Running"


def test_startup_deadline_after_restart_counts_from_after_the_backoff() -> None:
    job = make_job(1, startupDeadlineSeconds=20)
    st = status("Pending", attempt=1, restartCount=1, lastRestartTime=ts(100))
    assert decide(job, [pod(0, "Pending", attempt=1)], st, at=125).status["phase"] == "Pending"
    assert decide(job, [pod(0, "Pending", attempt=1)], st, at=130).status["phase"] == "Failed"


@pytest.mark.parametrize(
    ("policy", "deleted"),
    [
        ("None", []),
        ("Running", ["j-node-1-r0"]),
        ("All", ["j-node-1-r0", "j-node-2-r0"]),
    ],
)
def test_clean_pod_policy_never_deletes_failed_pods(policy: str, deleted: list[str]) -> None:
    pods = [pod(0, "Failed", exit_code=1), pod(1), pod(2, "Succeeded")]
    plan = decide(make_job(3, cleanPodPolicy=policy), pods, status("Failed", completionTime=ts(0)))
    assert plan.delete == deleted
    assert not plan.delete_job


def test_ttl_deletes_the_job_after_completion() -> None:
    job = make_job(1, ttlSecondsAfterFinished=30)
    st = status("Succeeded", completionTime=ts(10))
    early = decide(job, [pod(0, "Succeeded")], st, at=20)
    assert not early.delete_job and early.requeue_after == 20
    assert decide(job, [pod(0, "Succeeded")], st, at=40).delete_job


def test_suspend_deletes_active_pods_and_keeps_status() -> None:
    pods = [pod(0), pod(1, "Pending"), pod(0, "Failed", attempt=-1)]
    plan = decide(make_job(2, suspend=True), pods, status("Running", restartCount=1))
    assert plan.status["phase"] == "Suspended"
    assert plan.status["restartCount"] == 1
    assert sorted(plan.delete) == ["j-node-0-r0", "j-node-1-r0"]
    assert plan.create == []


def test_suspended_from_the_start_creates_nothing() -> None:
    plan = decide(make_job(2, suspend=True), [], {})
    assert plan.status["phase"] == "Suspended" and plan.create == []
    assert "startTime" not in plan.status


def test_suspending_a_gang_deletes_its_podgroup_once() -> None:
    # Created once and never updated: the resume creates it from the spec as it is then.
    suspending = decide(make_job(2, gang=True, suspend=True), [pod(0), pod(1)], status("Running"))
    assert suspending.delete_pod_children
    again = decide(make_job(2, gang=True, suspend=True), [], suspending.status)
    assert not again.delete_pod_children
    assert not decide(make_job(2, suspend=True), [pod(0)], status("Running")).delete_pod_children


def test_resume_renders_the_spec_changed_while_suspended() -> None:
    resumed = decide(make_job(3, gang=True), [], status("Suspended", nodes={"total": 2}))
    assert resumed.create == [(0, 0, 0), (1, 0, 0), (2, 0, 0)]
    assert resumed.ensure_podgroup and resumed.status["nodesReady"] == "0/3"


def test_resume_waits_for_terminating_pods_then_recreates() -> None:
    st = status("Suspended")
    waiting = decide(make_job(2), [pod(0, deleting=True)], st)
    assert waiting.create == [] and waiting.status["phase"] == "Suspended"
    resumed = decide(make_job(2), [], st)
    assert resumed.create == [(0, 0, 0), (1, 0, 0)]
    assert (resumed.status["phase"], resumed.status["reason"]) == ("Pending", "JobResumed")


def test_finished_job_is_stable() -> None:
    done = decide(make_job(1), [pod(0, "Succeeded")], status("Running"))
    again = decide(make_job(1), [pod(0, "Succeeded")], done.status, at=50)
    assert again.status == done.status and again.events == [] and again.delete == []


def test_pods_of_other_jobs_are_ignored() -> None:
    other = PodObs(name="k-node-0-r0", job="k", index=0, attempt=0, phase="Running")
    plan = decide(make_job(1), [other], {})
    assert plan.create == [(0, 0, 0)] and plan.delete == []


def test_invalid_spec_fails_once() -> None:
    plan = reconcile.invalid({}, "spec.nodes: bad", generation=2, now=T0)
    assert (plan.status["phase"], plan.status["reason"]) == ("Failed", "InvalidSpec")
    assert reconcile.invalid(plan.status, "spec.nodes: bad", generation=2, now=T0).events == []


def test_lost_start_time_is_recovered_from_the_oldest_pod() -> None:
    st = status("Created")
    del st["startTime"]
    plan = decide(make_job(1), [pod(0, "Pending", created=ts(-5))], st)
    assert plan.status["startTime"] == ts(-5)


def test_resume_restarts_the_deadline_clocks() -> None:
    job = make_job(1, activeDeadlineSeconds=60, startupDeadlineSeconds=30)
    resumed = decide(job, [], status("Suspended", restartCount=1, lastRestartTime=ts(0)), at=1000)
    assert resumed.create == [(0, 0, 0)] and resumed.status["startTime"] == ts(1000)
    later = decide(job, [pod(0, "Pending")], resumed.status, at=1020)
    assert later.status["phase"] == "Pending"


def test_elastic_job_not_running_yet_restarts_the_gang() -> None:
    pods = [pod(0), pod(1, "Failed", exit_code=137)]
    plan = decide(make_job(2, elastic=True), pods, status("Pending"))
    assert plan.status["phase"] == "Restarting"


def test_a_deleted_service_or_podgroup_is_recreated_while_the_job_runs() -> None:
    running = status("Running")
    plan = reconcile.decide(make_job(2, gang=True), [pod(0), pod(1)], running, T0, children_deleted=True)
    assert plan.ensure_service and plan.ensure_podgroup and not plan.create
    assert not decide(make_job(2, gang=True), [pod(0), pod(1)], running).ensure_service
    plain = reconcile.decide(make_job(2), [pod(0), pod(1)], running, T0, children_deleted=True)
    assert plain.ensure_service and not plain.ensure_podgroup
    for phase in ("Succeeded", "Failed", "Suspended"):
        job = make_job(2, suspend=phase == "Suspended")
        done = reconcile.decide(job, [], status(phase), T0, children_deleted=True)
        assert not done.ensure_service, phase


def test_the_first_failing_pod_is_recorded_with_node_ranks_exit_code_and_reason() -> None:
    job = make_job(2)
    late = pod(0, "Failed", exit_code=1, reason="Error", node="cpu-node-0", finished=ts(9))
    first = pod(1, "Failed", exit_code=137, reason="OOMKilled", node="cpu-node-1", finished=ts(5))
    plan = decide(job, [late, first], status("Running"), at=10)
    assert plan.status["lastFailure"] == {
        "pod": "j-node-1-r0",
        "nodeIndex": 1,
        "node": "cpu-node-1",
        "ranks": "1",
        "attempt": 0,
        "exitCode": 137,
        "reason": "OOMKilled",
        "finishedAt": ts(5),
        "summary": "j-node-1-r0 on cpu-node-1: OOMKilled (exit 137)",
    }
    # The exit code 1 of its peer is permanent, so the job fails; the record still names the first pod.
    assert plan.status["phase"] == "Failed"


def test_a_disruption_is_the_root_cause_and_a_vanished_pod_is_named_as_it_was() -> None:
    evicted = pod(0, "Failed", reason="Evicted", disrupted=True, node="n")
    peer = pod(1, "Failed", exit_code=1, reason="Error", finished=ts(1))
    plan = decide(make_job(2), [evicted, peer], status("Running"), at=10)
    assert plan.status["lastFailure"]["reason"] == "Evicted"
    assert plan.status["lastFailure"]["pod"] == "j-node-0-r0"
    gone = decide(make_job(2), [pod(0)], status("Running"), at=10)
    assert gone.status["lastFailure"]["reason"] == "PodVanished"
    assert gone.status["lastFailure"]["pod"] == "j-node-1-r0"
    # An elastic replacement that vanishes is named with its replacement count, as it was created.
    replaced = status("Running", attempt=2, nodeReplacements=[0, 3])
    lost = decide(make_job(2, elastic=True), [pod(0, attempt=2)], replaced, at=10)
    assert lost.status["lastFailure"]["pod"] == "j-node-1-r2-3"


def test_elastic_failures_name_no_rank_range() -> None:
    plan = decide(make_job(2, elastic=True), [pod(0, "Failed", exit_code=143)], status("Running"), at=10)
    assert "ranks" not in plan.status["lastFailure"]
