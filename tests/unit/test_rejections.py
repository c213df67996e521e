"""A rejected pod create's reason, from the API server's own messages (v1.36)."""

from __future__ import annotations

import pytest
from torchjob_operator import rejections

CASES = [
    (
        403,
        'pods "j-node-1-r0" is forbidden: exceeded quota: q, requested: pods=1, used: pods=1, '
        "limited: pods=1",
        "QuotaExceeded",
    ),
    (
        403,
        'pods "j-node-0-r0" is forbidden: violates PodSecurity "baseline:latest": host namespaces '
        "(hostNetwork=true)",
        "PodSecurity",
    ),
    (
        403,
        'pods "j-node-0-r0" is forbidden: minimum cpu usage per Container is 2, but request is 1',
        "LimitRange",
    ),
    (
        403,
        'pods "j-node-0-r0" is forbidden: maximum memory usage per Pod is 1Gi, but limit is 2Gi',
        "LimitRange",
    ),
    (
        400,
        'admission webhook "deny.example.com" denied the request: no GPUs on Fridays',
        "AdmissionWebhookDenied",
    ),
    (
        403,
        "pods \"j-node-0-r0\" is forbidden: ValidatingAdmissionPolicy 'no-host-net' with binding 'b' denied "
        "request: failed expression",
        "AdmissionPolicyDenied",
    ),
    (
        422,
        'Pod "j-node-0-r0" is invalid: spec.containers[1].image: Required value',
        "InvalidPodTemplate",
    ),
    (403, 'pods is forbidden: User "x" cannot create resource "pods"', "PodCreateForbidden"),
]


@pytest.mark.parametrize(
    ("code", "message", "reason"), CASES, ids=[c[2] + str(i) for i, c in enumerate(CASES)]
)
def test_reason_names_the_cause(code: int, message: str, reason: str) -> None:
    assert rejections.reason(code, message) == reason


def test_backoff_doubles_to_a_cap() -> None:
    assert [rejections.backoff_seconds(n) for n in (1, 2, 3, 7, 8, 50)] == [5, 10, 20, 300, 300, 300]
