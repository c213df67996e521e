"""API server faults against the real kube-apiserver: real 429s from API Priority and Fairness.

The operator runs as a ServiceAccount (system:masters is exempt from APF) whose FlowSchema sends every
request to a Limited priority level of one seat that rejects at once (limitResponse Reject). A second
ServiceAccount in the same level keeps the seat busy while jobs are created, so the operator's own
requests and Kopf's get 429 with Retry-After. Every job must still converge with one pod per node and no
duplicates, and the operator's retries metric must show the throttled retries."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from harness.controlplane import ControlPlane, client_from_kubeconfig, service_account_kubeconfig
from harness.polling import eventually
from kubernetes import client

from .conftest import Jobs, OperatorProcess

JOBS, NODES = 4, 2
OPERATOR_SA, LOAD_SA = "torchjob-operator", "apf-load"
LOAD_THREADS = 6
FLOWCONTROL = ("flowcontrol.apiserver.k8s.io", "v1")
RBAC_GROUP = "rbac.authorization.k8s.io"


def operator_metric(op: OperatorProcess, name: str, labels: str) -> float:
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", op.metrics(), re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.fixture
def throttled_level(kube: client.ApiClient, namespace: str) -> Iterator[str]:
    """A one-seat, rejecting priority level for OPERATOR_SA and LOAD_SA (cluster-admin both). Yields the
    FlowSchema's uid: the apiserver names it in each answer's X-Kubernetes-PF-FlowSchema-UID."""
    custom: Any = client.CustomObjectsApi(kube)
    rbac: Any = client.RbacAuthorizationV1Api(kube)
    group, version = FLOWCONTROL
    api_version = f"{group}/{version}"
    tiny, filler, schema = f"{namespace}-tiny", f"{namespace}-filler", f"{namespace}-operator"
    accounts = [{"name": sa, "namespace": namespace} for sa in (OPERATOR_SA, LOAD_SA)]
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": namespace},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", **account} for account in accounts],
        }
    )
    levels = {
        # Seats are the server's limit shared out by shares: one share rounds up to a few seats...
        tiny: {"nominalConcurrencyShares": 1, "lendablePercent": 0, "borrowingLimitPercent": 0},
        # ... unless a level nobody uses holds most shares, which leaves ours exactly one seat.
        filler: {"nominalConcurrencyShares": 1000, "lendablePercent": 100},
    }
    for name, limited in levels.items():
        body = {
            "apiVersion": api_version,
            "kind": "PriorityLevelConfiguration",
            "metadata": {"name": name},
            "spec": {"type": "Limited", "limited": {**limited, "limitResponse": {"type": "Reject"}}},
        }
        custom.create_cluster_custom_object(group, version, "prioritylevelconfigurations", body)
    flow = custom.create_cluster_custom_object(
        group,
        version,
        "flowschemas",
        {
            "apiVersion": api_version,
            "kind": "FlowSchema",
            "metadata": {"name": schema},
            "spec": {
                "priorityLevelConfiguration": {"name": tiny},
                "matchingPrecedence": 50,  # before the built-in service-accounts schema (9000)
                "distinguisherMethod": {"type": "ByUser"},
                "rules": [
                    {
                        "subjects": [{"kind": "ServiceAccount", "serviceAccount": a} for a in accounts],
                        "resourceRules": [
                            {
                                "verbs": ["*"],
                                "apiGroups": ["*"],
                                "resources": ["*"],
                                "clusterScope": True,
                                "namespaces": ["*"],
                            }
                        ],
                        "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                    }
                ],
            },
        },
    )
    try:
        yield str(flow["metadata"]["uid"])
    finally:
        custom.delete_cluster_custom_object(group, version, "flowschemas", schema)
        for name in levels:
            custom.delete_cluster_custom_object(group, version, "prioritylevelconfigurations", name)
        rbac.delete_cluster_role_binding(namespace)


class Load:
    """LOAD_THREADS clients as LOAD_SA listing pods back to back: they keep the level's seat busy."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.core: Any = client.CoreV1Api(api)
        self.namespace = namespace
        self.stopped = threading.Event()
        self.rejected = 0
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(LOAD_THREADS)]

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.core.list_namespaced_pod(self.namespace)
            except client.ApiException as exc:
                if exc.status != 429:
                    raise
                self.rejected += 1  # racy across threads; only "some" matters

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout=60)


def flow_schema_of(api: client.ApiClient, namespace: str) -> str | None:
    """The FlowSchema uid the apiserver put this request in (None: rejected, try again)."""
    core: Any = client.CoreV1Api(api)
    try:
        _, _, headers = core.list_namespaced_pod_with_http_info(namespace)
    except client.ApiException as exc:
        if exc.status == 429:
            return None
        raise
    return headers.get("X-Kubernetes-PF-FlowSchema-UID")


def test_throttled_by_priority_and_fairness_every_job_converges(
    control_plane: ControlPlane,
    namespace: str,
    throttled_level: str,
    start_operator: Callable[..., OperatorProcess],
    jobs: Jobs,
) -> None:
    operator_kubeconfig = service_account_kubeconfig(control_plane, namespace, OPERATOR_SA)
    load_kubeconfig = service_account_kubeconfig(control_plane, namespace, LOAD_SA)
    with client_from_kubeconfig(load_kubeconfig) as load_api:
        # APF picks up new schemas asynchronously: wait until our requests land in ours.
        eventually(
            lambda: flow_schema_of(load_api, namespace) == throttled_level, 60, "requests in the FlowSchema"
        )
        op = start_operator(operator_kubeconfig)
        with Load(load_api, namespace) as load:
            eventually(lambda: load.rejected > 0, 60, "the load rejected with 429 (the seat is busy)")
            names = [f"apf-{i}" for i in range(JOBS)]
            for name in names:
                jobs.create(name, nodes=NODES)
            throttled = 'reason="throttled"'
            eventually(
                lambda: operator_metric(op, "torchjob_operator_api_retries_total", throttled) > 0,
                120,
                "the operator's throttled retries",
                interval_s=0.5,
            )
        for name in names:
            jobs.wait_phase(name, "Running", timeout=180)
    for name in names:
        pods = jobs.pods(name)
        assert [p.metadata.name for p in pods] == [f"{name}-node-{i}-r0" for i in range(NODES)]
        assert {p.metadata.labels["torchjob.dev/attempt"] for p in pods} == {"0"}
        assert jobs.status(name).get("attempt", 0) == 0  # throttling restarted nothing
    retries = operator_metric(op, "torchjob_operator_api_retries_total", 'reason="throttled"')
    print(f"operator throttled retries: {retries:g}; load 429s: {load.rejected}")
    assert op.proc is not None and op.proc.poll() is None, op.output()[-4000:]
