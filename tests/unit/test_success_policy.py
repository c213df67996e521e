"""success_policy.after_success: the one rule the operator and the local run use for a job's success."""

from __future__ import annotations

import itertools

import pytest
from torchjob_core import success_policy
from torchjob_core.success_policy import Success, SuccessPolicy, after_success

NODES = 3
KINDS = {"fixed": False, "elastic": True}
# Every subset of 3 nodes that may have succeeded.
SUBSETS = [frozenset(c) for n in range(NODES + 1) for c in itertools.combinations(range(NODES), n)]


def expected(policy: str, done: frozenset[int]) -> int | bool | None:
    """The node whose success ends the job, None for every node, False for not yet."""
    if done == set(range(NODES)):
        return None
    if policy == "Node0" and 0 in done:
        return 0
    if policy == "AnyNode" and done:
        return min(done)
    return False


@pytest.mark.parametrize(
    "done", SUBSETS, ids=lambda d: "succeeded:" + (",".join(map(str, sorted(d))) or "none")
)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("written", [None, "AllNodes", "Node0", "AnyNode"], ids=lambda w: w or "absent")
def test_decision_table(written: str | None, kind: str, done: frozenset[int]) -> None:
    policy = SuccessPolicy(written, elastic=KINDS[kind])
    effective = written or ("AnyNode" if KINDS[kind] else "AllNodes")
    assert policy.name == effective
    want = expected(effective, done)
    got = after_success(policy, done, nodes=NODES)
    if want is False:
        assert got is None
        return
    assert got is not None
    assert (got.node, got.left) == (want, tuple(i for i in range(NODES) if i not in done))


def test_nodes_out_of_range_do_not_count() -> None:
    # A pod index the job no longer has (spec.nodes lowered while suspended) succeeds nothing.
    assert after_success(SuccessPolicy("AllNodes"), {0, 1, 5}, nodes=3) is None
    assert after_success(SuccessPolicy("AnyNode"), {5}, nodes=3) is None
    assert after_success(SuccessPolicy("AllNodes"), set(), nodes=0) is None


@pytest.mark.parametrize(
    ("policy", "done", "message"),
    [
        (SuccessPolicy(), {0, 1}, "All 2 nodes succeeded (successPolicy AllNodes, the default)."),
        (SuccessPolicy("Node0"), {0, 1}, "All 2 nodes succeeded (successPolicy Node0)."),
        (
            SuccessPolicy("Node0"),
            {0},
            "Pod p-0 succeeded (successPolicy Node0: node 0 finishing ends the job), before node(s) 1.",
        ),
        (
            SuccessPolicy(elastic=True),
            {1},
            "Pod p-1 succeeded (successPolicy AnyNode, the elastic default: the first node to finish ends "
            "the job), before node(s) 0.",
        ),
    ],
)
def test_reason_and_message_name_the_pod_and_the_policy(
    policy: SuccessPolicy, done: set[int], message: str
) -> None:
    success = after_success(policy, done, nodes=2)
    assert isinstance(success, Success)
    assert success.reason_message(lambda i: f"Pod p-{i}") == ("JobSucceeded", message)


def test_values_are_the_crd_enum() -> None:
    from torchjob_core.spec.api import SPEC

    schema = SPEC.schema()["properties"]["runPolicy"]["properties"]["successPolicy"]
    assert schema["enum"] == [success_policy.ALL_NODES, success_policy.NODE_0, success_policy.ANY_NODE]
    assert "default" not in schema  # the default depends on the job's kind
