"""The trainer's own exit codes, permanent by default, each with its reason and the trainer's termination
message in the condition, status.lastFailure and a Warning Event: 73 (the trainer could not write a
checkpoint) is CheckpointWriteFailed, 69 (torchjob-launch could not reach node 0's rendezvous store) is
RendezvousUnreachable."""

from __future__ import annotations

import datetime as dt
from typing import Any

from torchjob_core import constants, spec
from torchjob_core.failure_policy import Action, Exit, Failure, RestartPolicy, after_failure
from torchjob_operator import reconcile
from torchjob_operator.observe import observe_pod

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
CODE = constants.EXIT_CHECKPOINT_WRITE_FAILED
MESSAGE = (
    "cannot write a checkpoint to /checkpoints: No space left on device (ENOSPC); free space or grow the "
    "volume. The previous checkpoint, if any, is kept."
)


def test_the_code_is_73_and_permanent_by_default() -> None:
    assert CODE == 73
    decision = after_failure(
        RestartPolicy(backoff_limit=3),
        Failure(exits=[Exit(0, CODE)], lost=[0], running=[1]),
        counted_restarts=0,
    )
    assert (decision.action, decision.exit) == (Action.FAIL_PERMANENT, Exit(0, CODE))


def test_a_user_who_frees_the_volume_elsewhere_can_make_it_retryable() -> None:
    policy = RestartPolicy(backoff_limit=3, retryable_exit_codes=(137, 143, CODE))
    decision = after_failure(policy, Failure(exits=[Exit(0, CODE)], lost=[0]), counted_restarts=0)
    assert decision.action is Action.RESTART_GANG


def test_a_disruption_still_explains_it() -> None:
    # A preempted rank 0 whose last save hit a full disk: the disruption decides, as for any exit code.
    failure = Failure(exits=[Exit(0, CODE)], lost=[0], disruption=True)
    assert (
        after_failure(RestartPolicy(backoff_limit=3), failure, counted_restarts=0).action
        is Action.RESTART_GANG
    )


def _job(**run_policy: Any) -> spec.TrainingJob:
    return spec.load(
        {
            "apiVersion": "torchjob.dev/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": "j", "namespace": "ns", "uid": "u", "generation": 1},
            "spec": {"image": "img", "nodes": 2, "runPolicy": run_policy},
        }
    )


def _pod(index: int, terminated: dict[str, Any] | None) -> dict[str, Any]:
    state = {"terminated": terminated} if terminated else {"running": {}}
    return {
        "metadata": {
            "name": f"j-node-{index}-r0",
            "labels": {
                constants.LABEL_JOB_NAME: "j",
                constants.LABEL_NODE_INDEX: str(index),
                constants.LABEL_ATTEMPT: "0",
            },
        },
        "spec": {"nodeName": f"n{index}"},
        "status": {
            "phase": "Failed" if terminated else "Running",
            "containerStatuses": [{"name": constants.CONTAINER_NAME, "state": state}],
        },
    }


def _decide(*, code: int = CODE, message: str = MESSAGE, node: int = 0, **run_policy: Any) -> reconcile.Plan:
    # What the kubelet reports: reason Error, the termination-log file as the message.
    failed = {"exitCode": code, "reason": "Error", "message": message, "finishedAt": "2026-01-01T00:00:05Z"}
    pods = [observe_pod(_pod(i, failed if i == node else None)) for i in range(2)]
    observed = {
        "phase": "Running",
        "reason": "AllRanksRunning",
        "attempt": 0,
        "startTime": "2026-01-01T00:00:00Z",
    }
    return reconcile.decide(_job(**run_policy), pods, observed, T0 + dt.timedelta(seconds=10))


def test_the_job_fails_with_the_reason_and_the_trainers_message() -> None:
    plan = _decide()
    st = plan.status
    assert (st["phase"], st["reason"]) == ("Failed", "CheckpointWriteFailed")
    assert MESSAGE in st["message"] and "j-node-0-r0" in st["message"]
    failed = next(c for c in st["conditions"] if c["type"] == "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "CheckpointWriteFailed")
    assert MESSAGE in failed["message"]
    assert st["lastExitCode"] == CODE
    last = st["lastFailure"]
    assert (last["reason"], last["exitCode"], last["message"]) == ("CheckpointWriteFailed", CODE, MESSAGE)
    assert last["summary"] == "j-node-0-r0 on n0: CheckpointWriteFailed (exit 73)"
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "CheckpointWriteFailed")]
    assert MESSAGE in plan.events[0].message


def test_without_a_termination_message_the_reason_still_says_what_happened() -> None:
    pods = [
        observe_pod(_pod(0, {"exitCode": CODE, "reason": "Error"})),
        observe_pod(_pod(1, None)),
    ]
    plan = reconcile.decide(_job(), pods, {"phase": "Running", "attempt": 0}, T0)
    assert plan.status["reason"] == "CheckpointWriteFailed"
    assert "could not write a checkpoint" in plan.status["message"]


def test_when_retried_by_the_users_policy_the_root_cause_still_names_it() -> None:
    plan = _decide(retryableExitCodes=[CODE], backoffLimit=2)
    assert plan.status["phase"] == "Restarting"
    assert plan.status["lastFailure"]["reason"] == "CheckpointWriteFailed"


UNREACHABLE = (
    "the rendezvous store at j-node-0.j.ns.svc:29400 (node 0) was not reachable within 600 s: "
    "j-node-0.j.ns.svc does not resolve yet. Node 0's pod is the one to look at (pending, pulling its "
    "image, or failed)."
)


def test_a_node_that_never_reached_node_0_fails_the_job_as_rendezvous_unreachable() -> None:
    code = constants.EXIT_RENDEZVOUS_UNREACHABLE
    assert code == 69
    plan = _decide(code=code, message=UNREACHABLE, node=1)
    st = plan.status
    assert (st["phase"], st["reason"]) == ("Failed", "RendezvousUnreachable")
    assert UNREACHABLE in st["message"] and "j-node-1-r0" in st["message"]
    assert "retryableExitCodes" in st["message"]
    assert (st["lastFailure"]["reason"], st["lastFailure"]["exitCode"]) == ("RendezvousUnreachable", 69)
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "RendezvousUnreachable")]
