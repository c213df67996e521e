"""Failure policy against the real API: gang restart, permanent failure, backoffLimit, node loss, and
elastic node replacement."""

from __future__ import annotations

import re

from harness import nodes
from harness.polling import eventually
from kubernetes import client

from .conftest import Jobs, OperatorProcess


def restarts(op: OperatorProcess, namespace: str) -> dict[tuple[str, str], float]:
    """The operator's `torchjob_operator_restarts_total` of one namespace, by (scope, reason); the series
    still at 0 left out."""
    labels = rf'namespace="{re.escape(namespace)}",reason="(\w+)",scope="(\w+)"'  # exposition sorts them
    line = rf"^torchjob_operator_restarts_total\{{{labels}\}} (\S+)$"
    found = re.findall(line, op.metrics(), re.MULTILINE)
    return {(scope, reason): float(value) for reason, scope, value in found if float(value)}


def test_retryable_exit_restarts_the_gang_then_succeeds(operator: OperatorProcess, jobs: Jobs) -> None:
    jobs.create("retry", nodes=2)
    jobs.wait_phase("retry", "Running")
    jobs.exit("retry-node-0-r0", 137)
    jobs.wait(
        "retry",
        lambda s: s.get("attempt") == 1 and s.get("phase") == "Running",
        "attempt 1 running",
        timeout=90,
    )
    st = jobs.status("retry")
    assert st["restartCount"] == 1 and st["lastExitCode"] == 137 and st["lastRestartTime"]
    # The failed pod stays for its logs; its running peer was deleted; attempt 1 has a full gang.
    assert jobs.pod_phases("retry") == {
        "retry-node-0-r0": "Failed",
        "retry-node-0-r1": "Running",
        "retry-node-1-r1": "Running",
    }
    for name in ("retry-node-0-r1", "retry-node-1-r1"):
        jobs.exit(name, 0)
    st = jobs.wait_phase("retry", "Succeeded")
    assert st["restartCount"] == 1
    assert "RetryableExitCode" in jobs.events("retry")


def test_permanent_exit_fails_at_once(operator: OperatorProcess, jobs: Jobs) -> None:
    jobs.create("perm", nodes=2)
    jobs.wait_phase("perm", "Running")
    jobs.exit("perm-node-1-r0", 1)
    st = jobs.wait_phase("perm", "Failed")
    assert (st["reason"], st["restartCount"], st["lastExitCode"]) == ("PermanentExitCode", 0, 1)
    # cleanPodPolicy Running (default): the running peer goes, the failed pod and its logs stay.
    jobs.wait_pods("perm", {"perm-node-1-r0": "Failed"})
    eventually(lambda: "PermanentExitCode" in jobs.events("perm"), 20, "Failed event")


def test_a_checkpoint_write_failure_fails_with_its_reason_and_message(
    operator: OperatorProcess, jobs: Jobs
) -> None:
    # What the trainer's rank 0 leaves when its checkpoint volume is full (tests/torchrun covers that
    # side): exit 73 and one line in /dev/termination-log, which the kubelet reports as the message.
    message = (
        "cannot write a checkpoint to /checkpoints: No space left on device (ENOSPC); free space or grow "
        "the volume. The previous checkpoint, if any, is kept."
    )
    jobs.create("ckfull", nodes=2, runPolicy={"backoffLimit": 3})
    jobs.wait_phase("ckfull", "Running")
    jobs.exit("ckfull-node-0-r0", 73, message)
    st = jobs.wait_phase("ckfull", "Failed")
    assert (st["reason"], st["restartCount"], st["lastExitCode"]) == ("CheckpointWriteFailed", 0, 73)
    assert message in st["message"]
    failed = next(c for c in st["conditions"] if c["type"] == "Failed")
    assert (failed["reason"], failed["status"]) == ("CheckpointWriteFailed", "True")
    last = st["lastFailure"]
    assert (last["pod"], last["reason"], last["exitCode"], last["message"]) == (
        "ckfull-node-0-r0",
        "CheckpointWriteFailed",
        73,
        message,
    )
    eventually(lambda: "CheckpointWriteFailed" in jobs.events("ckfull"), 20, "Warning event")


def test_a_node_that_never_reached_node_0_fails_as_rendezvous_unreachable(
    operator: OperatorProcess, jobs: Jobs
) -> None:
    # What torchjob-launch leaves on a node whose wait for node 0's store ran out (tests/torchrun covers
    # that side): exit 69 and the endpoint with the last reason in /dev/termination-log.
    message = (
        "the rendezvous store at unreach-node-0.unreach:29500 (node 0) was not reachable within 600 s: "
        "unreach-node-0.unreach does not resolve yet."
    )
    jobs.create("unreach", nodes=2, runPolicy={"backoffLimit": 3})
    jobs.wait_phase("unreach", "Running")
    jobs.exit("unreach-node-1-r0", 69, message)
    st = jobs.wait_phase("unreach", "Failed")
    assert (st["reason"], st["restartCount"], st["lastExitCode"]) == ("RendezvousUnreachable", 0, 69)
    assert message in st["message"] and "unreach-node-1-r0" in st["message"]
    assert (st["lastFailure"]["reason"], st["lastFailure"]["message"]) == ("RendezvousUnreachable", message)
    eventually(lambda: "RendezvousUnreachable" in jobs.events("unreach"), 20, "Warning event")


def test_the_users_exit_code_lists_override_the_default_rule(operator: OperatorProcess, jobs: Jobs) -> None:
    # 143 (preempted) is retryable by default and 1 permanent; the job's lists turn both around.
    policy = {"backoffLimit": 2, "permanentExitCodes": [143], "retryableExitCodes": [1]}
    jobs.create("lists", nodes=1, runPolicy=policy)
    jobs.wait_phase("lists", "Running")
    jobs.exit("lists-node-0-r0", 1)
    jobs.wait(
        "lists",
        lambda s: s.get("attempt") == 1 and s.get("phase") == "Running",
        "attempt 1 running after exit 1",
        timeout=90,
    )
    jobs.exit("lists-node-0-r1", 143)
    st = jobs.wait_phase("lists", "Failed")
    assert (st["reason"], st["restartCount"], st["lastExitCode"]) == ("PermanentExitCode", 1, 143)


def test_backoff_limit_exhausted_fails(operator: OperatorProcess, jobs: Jobs) -> None:
    jobs.create("limit", nodes=1, runPolicy={"backoffLimit": 1})
    jobs.wait_phase("limit", "Running")
    jobs.exit("limit-node-0-r0", 143)
    jobs.wait(
        "limit",
        lambda s: s.get("attempt") == 1 and s.get("phase") == "Running",
        "attempt 1 running",
        timeout=90,
    )
    jobs.exit("limit-node-0-r1", 143)
    st = jobs.wait_phase("limit", "Failed")
    assert (st["reason"], st["restartCount"]) == ("BackoffLimitExceeded", 1)
    assert jobs.pod_phases("limit") == {"limit-node-0-r0": "Failed", "limit-node-0-r1": "Failed"}


def test_deleting_a_node_restarts_the_job(
    operator: OperatorProcess, jobs: Jobs, kube: client.ApiClient
) -> None:
    node = f"lost-{jobs.ns[-6:]}"
    nodes.create_node(kube, node, gpus=8, labels={"torchjob.dev/test-node": node}, wait_ready_s=60)
    try:
        jobs.create("lost", nodes=1, gpus=8, nodeSelector={"torchjob.dev/test-node": node})
        jobs.wait_phase("lost", "Running")
        assert jobs.pods("lost")[0].spec.node_name == node
    finally:
        nodes.delete_node(kube, node)
    # The pod GC controller removes pods of a vanished node; that is a disruption: gang restart.
    st = jobs.wait("lost", lambda s: s.get("restartCount") == 1, "gang restart", timeout=180)
    assert (st["attempt"], st["disruptions"]) == (1, 1)
    jobs.wait_pods("lost", {"lost-node-0-r1": "Pending"}, timeout=60)


def test_elastic_job_replaces_a_failed_node_alone(operator: OperatorProcess, jobs: Jobs) -> None:
    elastic = {"minNodes": 1, "maxNodes": 3}
    jobs.create("el", nodes=3, elastic=elastic, runPolicy={"backoffSeconds": 1})
    jobs.wait_phase("el", "Running")
    jobs.exit("el-node-2-r0", 137)
    # The survivors are left alone (torchrun re-forms the group); node 2 gets a pod of its own.
    jobs.wait_pods(
        "el",
        {
            "el-node-0-r0": "Running",
            "el-node-1-r0": "Running",
            "el-node-2-r0": "Failed",
            "el-node-2-r0-1": "Running",
        },
    )
    st = jobs.wait("el", lambda s: s.get("reason") == "AllRanksRunning", "the replacement running")
    assert (st["phase"], st["attempt"], st["restartCount"]) == ("Running", 0, 1)
    assert st["nodeReplacements"] == [0, 0, 1] and st["lastExitCode"] == 137
    assert "NodeReplaced" in jobs.events("el")
    assert restarts(operator, jobs.ns) == {("node", "retryable_exit"): 1.0}

    jobs.core.delete_namespaced_pod("el-node-1-r0", jobs.ns)  # someone else deletes a pod: replaced too
    jobs.wait_pods(
        "el",
        {
            "el-node-0-r0": "Running",
            "el-node-2-r0": "Failed",
            "el-node-1-r0-1": "Running",
            "el-node-2-r0-1": "Running",
        },
        timeout=90,
    )
    jobs.exit("el-node-0-r0", 0)
    st = jobs.wait_phase("el", "Succeeded")
    assert (st["attempt"], st["restartCount"], st["nodeReplacements"]) == (0, 2, [0, 1, 1])
    # Each replacement once, by its reason, however many passes and status writes followed it.
    assert restarts(operator, jobs.ns) == {("node", "retryable_exit"): 1.0, ("node", "disruption"): 1.0}


def test_elastic_job_restarts_the_gang_when_node_0_fails(operator: OperatorProcess, jobs: Jobs) -> None:
    jobs.create("el0", nodes=2, elastic={"minNodes": 1, "maxNodes": 2}, runPolicy={"backoffSeconds": 1})
    jobs.wait_phase("el0", "Running")
    jobs.exit("el0-node-0-r0", 137)  # node 0 hosts the rendezvous: the others cannot go on without it
    st = jobs.wait("el0", lambda s: s.get("attempt") == 1 and s.get("phase") == "Running", "attempt 1")
    assert st["restartCount"] == 1 and st["nodeReplacements"] == []
    assert restarts(operator, jobs.ns) == {("gang", "retryable_exit"): 1.0}


def test_a_disruption_restarts_even_without_a_restart_budget(operator: OperatorProcess, jobs: Jobs) -> None:
    jobs.create("drain", nodes=2, runPolicy={"backoffLimit": 0, "backoffSeconds": 1})
    jobs.wait_phase("drain", "Running")
    jobs.core.delete_namespaced_pod("drain-node-1-r0", jobs.ns)  # a drain or the eviction API
    st = jobs.wait("drain", lambda s: s.get("attempt") == 1 and s.get("phase") == "Running", "attempt 1")
    assert (st["restartCount"], st["disruptions"]) == (1, 1)
    jobs.exit("drain-node-0-r1", 137)  # the program's own retryable failure: that one is counted
    st = jobs.wait_phase("drain", "Failed")
    assert st["reason"] == "BackoffLimitExceeded"
    assert "PodDisrupted" in jobs.events("drain")
