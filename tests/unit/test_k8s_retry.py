"""k8s.KubeApi's retries, faked only at the boundary: the kubernetes client's call raises what a real
apiserver answers (429 with Retry-After, 5xx, urllib3's lost connection). The injected sleep records the
waits, so nothing here sleeps."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import kopf
import pytest
import urllib3
from kubernetes import client
from torchjob_operator import handlers, k8s, metrics
from torchjob_operator.actuate import PodRejectedError

JOB = ("ns", "job")
POD = {"metadata": {"name": "job-0"}}


def api_error(status: int, *, retry_after: str | None = None, body: Any = None) -> client.ApiException:
    exc = client.ApiException(status=status, reason="test")
    exc.headers = {"Retry-After": retry_after} if retry_after is not None else {}
    exc.body = json.dumps(body) if body is not None else None
    return exc


def connection_refused() -> urllib3.exceptions.MaxRetryError:
    reason = urllib3.exceptions.NewConnectionError(None, "[Errno 111] Connection refused")  # type: ignore[arg-type]
    return urllib3.exceptions.MaxRetryError(None, "/api/v1/namespaces/ns/pods", reason)  # type: ignore[arg-type]


def answers(*outcomes: BaseException | object) -> Callable[..., object]:
    """A client call that raises or returns each outcome in turn; `calls` counts the tries."""
    queue: Iterator[BaseException | object] = iter(outcomes)

    def call(*_: Any, **__: Any) -> object:
        call.calls += 1  # type: ignore[attr-defined]
        outcome = next(queue)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    call.calls = 0  # type: ignore[attr-defined]
    return call


class Recorder:
    """The injected sleep: records each wait instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def kube_api(sleep: Recorder, **calls: Callable[..., object]) -> k8s.KubeApi:
    api = k8s.KubeApi(client.ApiClient(), k8s.RequestLedger(), sleep=sleep)
    api.core = type("FakeCoreV1Api", (), {name: staticmethod(fn) for name, fn in calls.items()})()
    api.custom = api.core
    return api


def retries(reason: str) -> float:
    value = metrics.REGISTRY.get_sample_value("torchjob_operator_api_retries_total", {"reason": reason})
    return value or 0.0


def test_throttled_create_waits_the_retry_after_and_is_counted() -> None:
    sleep = Recorder()
    call = answers(api_error(429, retry_after="3"), api_error(429, retry_after="0"), object())
    api = kube_api(sleep, create_namespaced_pod=call)
    before = retries("throttled")
    assert asyncio.run(api.create_pod(JOB, POD)) is True
    # Retry-After wins when it is longer than the backoff (3 > 0.5); the backoff when it is shorter.
    assert sleep.waits == [3.0, 1.0]
    assert call.calls == 3  # type: ignore[attr-defined]
    assert api.ledger.by_job[JOB]["create"] == 3  # every try is a request against the job's budget
    assert retries("throttled") - before == 2


def test_retry_after_from_the_status_body_and_capped() -> None:
    sleep = Recorder()
    call = answers(
        api_error(429, body={"kind": "Status", "details": {"retryAfterSeconds": 5}}),
        api_error(429, retry_after="86400"),  # a confused server cannot park the job loop for a day
        None,
    )
    api = kube_api(sleep, delete_namespaced_pod=call)
    asyncio.run(api.delete_pod(JOB, "job-0"))
    assert sleep.waits == [5.0, k8s.RETRY.max_retry_after]


def test_server_errors_and_lost_connections_back_off() -> None:
    sleep = Recorder()
    protocol = urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))
    call = answers(api_error(503), api_error(500), connection_refused(), protocol, object())
    api = kube_api(sleep, create_namespaced_service=call)
    server, connection = retries("server_error"), retries("connection")
    asyncio.run(api.ensure_service(JOB, {"metadata": {"name": "job"}}))
    assert sleep.waits == list(k8s.RETRY.backoffs[:4])
    assert retries("server_error") - server == 2
    assert retries("connection") - connection == 2


def test_a_retried_create_that_had_landed_is_success() -> None:
    sleep = Recorder()
    api = kube_api(sleep, create_namespaced_pod=answers(api_error(503), api_error(409)))
    assert asyncio.run(api.create_pod(JOB, POD)) is False  # 409: the first try did create it
    assert sleep.waits == [k8s.RETRY.backoffs[0]]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_other_client_errors_are_final(status: int) -> None:
    sleep = Recorder()
    call = answers(api_error(status))
    api = kube_api(sleep, patch_namespaced_custom_object_status=call)
    with pytest.raises(client.ApiException) as raised:
        asyncio.run(api.patch_status(JOB, {"phase": "Running"}, None))
    assert raised.value.status == status
    assert call.calls == 1  # type: ignore[attr-defined]
    assert sleep.waits == []


def test_a_rejected_pod_is_final_and_named() -> None:
    sleep = Recorder()
    body = {"kind": "Status", "message": 'pods "job-0" is forbidden: exceeded quota'}
    api = kube_api(sleep, create_namespaced_pod=answers(api_error(403, body=body)))
    with pytest.raises(PodRejectedError, match="exceeded quota"):
        asyncio.run(api.create_pod(JOB, POD))
    assert sleep.waits == []


def test_retries_end_and_the_last_answer_is_raised() -> None:
    sleep = Recorder()
    policy = k8s.RetryPolicy(backoffs=(0.5, 1.0))
    api = k8s.KubeApi(client.ApiClient(), k8s.RequestLedger(), retry=policy, sleep=sleep)
    call = answers(api_error(503), api_error(503), api_error(504))
    api.core = type("FakeCoreV1Api", (), {"delete_namespaced_pod": staticmethod(call)})()
    with pytest.raises(client.ApiException) as raised:
        asyncio.run(api.delete_pod(JOB, "job-0"))
    assert raised.value.status == 504  # the job loop's own backoff takes over from here
    assert sleep.waits == [0.5, 1.0]
    assert call.calls == 3  # type: ignore[attr-defined]


def test_programming_errors_are_not_retried() -> None:
    sleep = Recorder()
    api = kube_api(sleep, create_namespaced_pod=answers(TypeError("bad body")))
    with pytest.raises(TypeError):
        asyncio.run(api.create_pod(JOB, POD))
    assert sleep.waits == []


def test_retry_reason_and_retry_after() -> None:
    assert k8s.retry_reason(api_error(429)) == "throttled"
    assert k8s.retry_reason(api_error(502)) == "server_error"
    assert k8s.retry_reason(api_error(409)) is None
    assert k8s.retry_reason(connection_refused()) == "connection"
    assert k8s.retry_reason(ValueError()) is None
    assert k8s.retry_after(api_error(429, retry_after="2")) == 2.0
    # An HTTP-date Retry-After (never sent by the apiserver) falls back to the Status body.
    dated = api_error(429, retry_after="Wed, 21 Oct 2026 07:28:00 GMT", body={"details": {}})
    assert k8s.retry_after(dated) is None
    assert k8s.retry_after(api_error(429, body="not a status")) is None
    assert k8s.retry_after(connection_refused()) is None


def test_kopf_gets_the_same_backoffs() -> None:
    settings = kopf.OperatorSettings()
    runtime = handlers.OperatorRuntime(api=object())  # type: ignore[arg-type]
    handlers.configure(settings=settings, memo=runtime.memo())
    assert tuple(settings.networking.error_backoffs) == k8s.RETRY.backoffs  # type: ignore[arg-type]
    assert sum(k8s.RETRY.backoffs) > 60  # outlasts an apiserver restart
