"""The root cause of a failure reaches status against the real API server: the pod that failed first, its
Kubernetes node, its rank range, exit code and reason (OOMKilled here, as KWOK reports it), shown by
`kubectl get -o wide` (column Failure)."""

from __future__ import annotations

from typing import Any

from harness.kubectl import Kubectl

from .conftest import EXIT_ANNOTATION, Jobs, OperatorProcess


def test_the_first_failing_pod_names_its_node_ranks_exit_code_and_reason(
    operator: OperatorProcess, jobs: Jobs, kubectl: Kubectl
) -> None:
    jobs.create("oom", nodes=2, procsPerNode=2)
    jobs.wait_phase("oom", "Running")
    annotations = {EXIT_ANNOTATION: "137", "kwok.torchjob.dev/exit-reason": "OOMKilled"}
    jobs.core.patch_namespaced_pod("oom-node-1-r0", jobs.ns, {"metadata": {"annotations": annotations}})
    st = jobs.wait("oom", lambda s: s.get("attempt") == 1, "gang restart")
    node: Any = jobs.core.read_namespaced_pod("oom-node-1-r0", jobs.ns).spec.node_name
    failure = st["lastFailure"]
    assert {
        k: failure[k] for k in ("pod", "nodeIndex", "node", "ranks", "attempt", "exitCode", "reason")
    } == {
        "pod": "oom-node-1-r0",
        "nodeIndex": 1,
        "node": node,
        "ranks": "2-3",
        "attempt": 0,
        "exitCode": 137,
        "reason": "OOMKilled",
    }
    assert failure["summary"] == f"oom-node-1-r0 on {node}: OOMKilled (exit 137)"
    table = kubectl("get", "tj", "oom", "-n", jobs.ns, "-o", "wide").stdout.splitlines()
    assert table[0].split()[-1] == "FAILURE"
    assert table[1].endswith(f"oom-node-1-r0 on {node}: OOMKilled (exit 137)")
