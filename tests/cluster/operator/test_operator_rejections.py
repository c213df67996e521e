"""A pod create the API server rejects reaches the job's status, with the cause as reason and the API's
own message, plus a Warning Event; the operator retries with backoff (no hot loop) and goes on once the
cause is gone. Every cause here is real admission on the real kube-apiserver: ResourceQuota,
LimitRange, Pod Security admission (a namespace label), pod validation (an invalid template), a
ValidatingAdmissionPolicy and a validating webhook (harness.webhook, served on loopback)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness.controlplane import ControlPlane
from harness.polling import eventually
from harness.webhook import WEBHOOK_NAME, DenyingWebhook
from kubernetes import client

from .conftest import Jobs, OperatorProcess

PROBE = {
    "metadata": {"name": "probe"},
    "spec": {
        "hostNetwork": True,
        "containers": [{"name": "c", "image": "x:1", "resources": {"requests": {"cpu": "1"}}}],
    },
}


def rejected(jobs: Jobs, body: dict[str, Any]) -> bool:
    """The admission plugin sees its object (its informer caught up): a dry-run pod is refused."""
    try:
        jobs.core.create_namespaced_pod(jobs.ns, body, dry_run="All")
    except client.ApiException as exc:
        return exc.status in (400, 403, 422)
    return False


def limit_range(jobs: Jobs) -> dict[str, Any]:
    jobs.core.create_namespaced_limit_range(
        jobs.ns,
        {"metadata": {"name": "lr"}, "spec": {"limits": [{"type": "Container", "min": {"cpu": "2"}}]}},
    )
    eventually(lambda: rejected(jobs, PROBE), 30, "LimitRanger sees the LimitRange")
    return {}


def pod_security(jobs: Jobs) -> dict[str, Any]:
    labels = {"pod-security.kubernetes.io/enforce": "baseline"}
    jobs.core.patch_namespace(jobs.ns, {"metadata": {"labels": labels}})
    eventually(lambda: rejected(jobs, PROBE), 30, "Pod Security admission sees the label")
    return {"template": {"spec": {"hostNetwork": True}}}


def invalid_template(jobs: Jobs) -> dict[str, Any]:
    # The CRD keeps template.spec open; pod validation then refuses a sidecar without an image.
    return {"template": {"spec": {"containers": [{"name": "trainer"}, {"name": "side"}]}}}


CASES: list[tuple[str, Callable[[Jobs], dict[str, Any]], str, str]] = [
    ("LimitRange", limit_range, "403", "minimum cpu usage per Container is 2, but request is 1"),
    ("PodSecurity", pod_security, "403", 'violates PodSecurity "baseline:latest": host namespaces'),
    ("InvalidPodTemplate", invalid_template, "422", "spec.containers[1].image: Required value"),
]


def creates(op: OperatorProcess) -> float:
    match = re.search(r'^torchjob_operator_api_requests_total\{verb="create"\} (\S+)$', op.metrics(), re.M)
    return float(match.group(1)) if match else 0.0


@pytest.mark.parametrize(("reason", "setup", "code", "message"), CASES, ids=[c[0] for c in CASES])
def test_a_rejected_pod_names_its_cause_in_status(  # noqa: PLR0917 (fixtures and parameters)
    reason: str,
    setup: Callable[[Jobs], dict[str, Any]],
    code: str,
    message: str,
    operator: OperatorProcess,
    jobs: Jobs,
) -> None:
    assert_names_its_cause(jobs, setup(jobs), reason, code, message)


def assert_names_its_cause(jobs: Jobs, spec: dict[str, Any], reason: str, code: str, message: str) -> None:
    jobs.create("rej", nodes=1, **spec)
    st = jobs.wait("rej", lambda s: s.get("reason") == reason, f"reason {reason}")
    assert st["phase"] == "Pending"
    assert st["message"].startswith(f"The API server rejected pod rej-node-0-r0 ({code}): ")
    assert message in st["message"]
    pending = next(c for c in st["conditions"] if c["type"] == "Pending")
    assert (pending["status"], pending["reason"]) == ("True", reason)
    eventually(lambda: reason in jobs.events("rej"), 30, f"a {reason} Event")
    assert jobs.pods("rej") == []


ADMISSION = ("admissionregistration.k8s.io", "v1")


@pytest.fixture
def frozen_by_policy(kube: client.ApiClient, jobs: Jobs) -> Iterator[str]:
    """A ValidatingAdmissionPolicy (CEL) that refuses every pod create, bound to the test's namespace."""
    custom: Any = client.CustomObjectsApi(kube)
    name = f"{jobs.ns}-frozen"
    pod_creates = {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}
    in_namespace = {"matchLabels": {"kubernetes.io/metadata.name": jobs.ns}}
    policy = {
        "apiVersion": "/".join(ADMISSION),
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [pod_creates]},
            "validations": [{"expression": "false", "message": "this namespace is frozen"}],
        },
    }
    binding = {
        "apiVersion": "/".join(ADMISSION),
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": in_namespace},
        },
    }
    objects = (("validatingadmissionpolicies", policy), ("validatingadmissionpolicybindings", binding))
    for plural, body in objects:
        custom.create_cluster_custom_object(*ADMISSION, plural, body)
    try:
        eventually(lambda: rejected(jobs, PROBE), 60, "the policy enforced")
        yield name
    finally:
        for plural, _ in reversed(objects):
            custom.delete_cluster_custom_object(*ADMISSION, plural, name)


def test_a_validating_admission_policy_denial_names_its_cause(
    operator: OperatorProcess, jobs: Jobs, frozen_by_policy: str
) -> None:
    message = (
        f"ValidatingAdmissionPolicy '{frozen_by_policy}' with binding '{frozen_by_policy}' denied request"
    )
    assert_names_its_cause(jobs, {}, "AdmissionPolicyDenied", "422", message)  # CEL denials are Invalid


@pytest.fixture
def denying_webhook(
    control_plane: ControlPlane, kube: client.ApiClient, jobs: Jobs, tmp_path: Path
) -> Iterator[DenyingWebhook]:
    admission: Any = client.AdmissionregistrationV1Api(kube)
    name = f"{jobs.ns}-deny"
    with DenyingWebhook(control_plane.keys, tmp_path, "pods need a ticket") as hook:
        admission.create_validating_webhook_configuration(hook.configuration(name, jobs.ns))
        try:
            eventually(lambda: rejected(jobs, PROBE), 60, "the webhook called")
            yield hook
        finally:
            admission.delete_validating_webhook_configuration(name)


def test_a_webhook_denial_names_its_cause(
    operator: OperatorProcess, jobs: Jobs, denying_webhook: DenyingWebhook
) -> None:
    message = f'admission webhook "{WEBHOOK_NAME}" denied the request: pods need a ticket'
    assert_names_its_cause(jobs, {}, "AdmissionWebhookDenied", "403", message)
    assert denying_webhook.calls >= 2  # the probe and the operator's create


def test_quota_exceeded_backs_off_then_creates_once_the_quota_allows(
    operator: OperatorProcess, jobs: Jobs
) -> None:
    quota = {"metadata": {"name": "q"}, "spec": {"hard": {"pods": "1"}}}
    jobs.core.create_namespaced_resource_quota(jobs.ns, quota)

    def counted() -> bool:
        st = jobs.core.read_namespaced_resource_quota("q", jobs.ns).status
        return bool(st and st.hard)

    eventually(counted, 30, "the quota controller fills the quota's status")
    jobs.create("quota", nodes=2)
    st = jobs.wait("quota", lambda s: s.get("reason") == "QuotaExceeded", "reason QuotaExceeded")
    assert "exceeded quota: q" in st["message"] and "limited: pods=1" in st["message"]
    eventually(lambda: "QuotaExceeded" in jobs.events("quota"), 30, "a QuotaExceeded Event")
    assert len(jobs.pods("quota")) == 1

    # Backoff 5 s, 10 s, 20 s: a few creates in 12 s (pods and Events), never a hot loop.
    before = creates(operator)
    time.sleep(12)
    assert creates(operator) - before <= 4

    jobs.core.delete_namespaced_resource_quota("q", jobs.ns)
    st = jobs.wait_phase("quota", "Running", timeout=90)
    assert st["nodesReady"] == "2/2"
