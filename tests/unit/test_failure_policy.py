"""failure_policy.after_failure: the one decision the operator and the local run take after a failure."""

from __future__ import annotations

import pytest
from torchjob_core import spec
from torchjob_core.failure_policy import Action, Exit, Failure, RestartPolicy, after_failure

FIXED = RestartPolicy(backoff_limit=2, backoff_seconds=10)
ELASTIC = RestartPolicy(backoff_limit=2, backoff_seconds=10, elastic_min_nodes=1)
PERMANENT_7 = RestartPolicy(backoff_limit=2, backoff_seconds=10, permanent_exit_codes=(143, 7))


def exits(*pairs: tuple[int, int]) -> list[Exit]:
    return [Exit(node, code) for node, code in pairs]


# policy, failure, counted restarts so far -> action, reported exit, counted, restarts after, delay
TABLE = {
    "exit 1 is permanent": (
        FIXED,
        Failure(exits=exits((1, 1)), lost=[1], running=[0]),
        0,
        (Action.FAIL_PERMANENT, Exit(1, 1), False, 0, 0.0),
    ),
    "a permanent code anywhere wins over a retryable first one": (
        FIXED,
        Failure(exits=exits((0, 137), (1, 1)), lost=[0, 1]),
        0,
        (Action.FAIL_PERMANENT, Exit(1, 1), False, 0, 0.0),
    ),
    "permanentExitCodes beat the default retryable 143": (
        PERMANENT_7,
        Failure(exits=exits((0, 143)), lost=[0], running=[1]),
        0,
        (Action.FAIL_PERMANENT, Exit(0, 143), False, 0, 0.0),
    ),
    "retryable: the gang restarts after the base backoff": (
        FIXED,
        Failure(exits=exits((1, 137)), lost=[1], running=[0]),
        0,
        (Action.RESTART_GANG, Exit(1, 137), True, 1, 10.0),
    ),
    "a signal death (128+N) is retryable, backoff doubled": (
        FIXED,
        Failure(exits=exits((0, 139)), lost=[0]),
        1,
        (Action.RESTART_GANG, Exit(0, 139), True, 2, 20.0),
    ),
    "backoffLimit used up": (
        FIXED,
        Failure(exits=exits((0, 143)), lost=[0]),
        2,
        (Action.FAIL_BACKOFF_LIMIT, Exit(0, 143), False, 2, 0.0),
    ),
    "a disruption is not counted and ignores its peers' exit 1": (
        FIXED,
        Failure(exits=exits((1, 1)), lost=[0, 1], disruption=True),
        2,
        (Action.RESTART_GANG, Exit(1, 1), False, 2, 20.0),
    ),
    "a disruption before any counted restart waits the base backoff": (
        FIXED,
        Failure(lost=[1], running=[0], disruption=True),
        0,
        (Action.RESTART_GANG, None, False, 0, 10.0),
    ),
    "elastic: a node other than 0 is replaced alone": (
        ELASTIC,
        Failure(exits=exits((1, 137)), lost=[1], running=[0]),
        0,
        (Action.REPLACE_ALONE, Exit(1, 137), True, 1, 10.0),
    ),
    "elastic: a disrupted node is replaced alone, not counted": (
        ELASTIC,
        Failure(lost=[2], running=[0, 1], disruption=True),
        1,
        (Action.REPLACE_ALONE, None, False, 1, 10.0),
    ),
    "elastic: node 0 lost restarts the gang": (
        ELASTIC,
        Failure(exits=exits((0, 137)), lost=[0], running=[1]),
        0,
        (Action.RESTART_GANG, Exit(0, 137), True, 1, 10.0),
    ),
    "elastic: below minNodes restarts the gang": (
        RestartPolicy(backoff_limit=2, backoff_seconds=10, elastic_min_nodes=2),
        Failure(exits=exits((1, 137)), lost=[1], running=[0]),
        0,
        (Action.RESTART_GANG, Exit(1, 137), True, 1, 10.0),
    ),
    "elastic: not yet training restarts the gang": (
        ELASTIC,
        Failure(exits=exits((1, 137)), lost=[1], running=[0], training=False),
        0,
        (Action.RESTART_GANG, Exit(1, 137), True, 1, 10.0),
    ),
    "elastic: a replacement counts against backoffLimit too": (
        ELASTIC,
        Failure(exits=exits((1, 137)), lost=[1], running=[0]),
        2,
        (Action.FAIL_BACKOFF_LIMIT, Exit(1, 137), False, 2, 0.0),
    ),
    "elastic: a permanent exit fails even a replaceable node": (
        ELASTIC,
        Failure(exits=exits((1, 2)), lost=[1], running=[0]),
        0,
        (Action.FAIL_PERMANENT, Exit(1, 2), False, 0, 0.0),
    ),
}


@pytest.mark.parametrize(("policy", "failure", "counted", "want"), TABLE.values(), ids=TABLE.keys())
def test_after_failure(
    policy: RestartPolicy,
    failure: Failure,
    counted: int,
    want: tuple[Action, Exit | None, bool, int, float],
) -> None:
    d = after_failure(policy, failure, counted_restarts=counted)
    assert (d.action, d.exit, d.counted, d.restarts, d.delay_seconds) == want
    assert d.fails == (d.action in (Action.FAIL_PERMANENT, Action.FAIL_BACKOFF_LIMIT))


def test_the_backoff_is_capped() -> None:
    d = after_failure(FIXED, Failure(exits=exits((0, 137)), lost=[0]), counted_restarts=1)
    big = RestartPolicy(backoff_limit=100, backoff_seconds=10)
    assert d.delay_seconds == 20
    assert after_failure(big, Failure(exits=exits((0, 137))), counted_restarts=60).delay_seconds == 300


def test_restart_policy_of_a_job() -> None:
    job = spec.load(
        {
            "apiVersion": "torchjob.dev/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": "j"},
            "spec": {
                "image": "img",
                "nodes": 2,
                "elastic": {"minNodes": 1, "maxNodes": 2},
                "runPolicy": {"backoffLimit": 4, "backoffSeconds": 3, "permanentExitCodes": [9]},
            },
        }
    )
    assert RestartPolicy.of(job) == RestartPolicy(
        backoff_limit=4,
        backoff_seconds=3.0,
        retryable_exit_codes=(137, 143),
        permanent_exit_codes=(9,),
        elastic_min_nodes=1,
    )
