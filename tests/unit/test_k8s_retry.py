"""k8s.KubeApi retries 429, 5xx and lost connections with backoff, never sooner than Retry-After; a fake
apiserver at the HTTP boundary (a real kubernetes client talking to a local http.server)."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest
from kubernetes import client
from torchjob_operator import k8s, metrics

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}}


class Scripted(http.server.BaseHTTPRequestHandler):
    answers: ClassVar[list[tuple[int, dict[str, str]]]] = []
    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Scripted.seen.append(self.path)
        status, headers = Scripted.answers.pop(0) if Scripted.answers else (201, {})
        body = json.dumps(POD if status < 300 else {"kind": "Status", "code": status}).encode()
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Scripted.answers, Scripted.seen = [], []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def api_for(host: str, sleeps: list[float]) -> k8s.KubeApi:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    return k8s.KubeApi(client.ApiClient(client.Configuration(host=host)), k8s.RequestLedger(), sleep=sleep)


def retries(reason: str) -> float:
    return float(
        metrics.REGISTRY.get_sample_value("torchjob_operator_api_retries_total", {"reason": reason}) or 0
    )


def test_429_and_503_are_retried_with_backoff_and_retry_after(server: str) -> None:
    Scripted.answers = [(429, {"Retry-After": "3"}), (503, {}), (201, {})]
    sleeps: list[float] = []
    before = retries("throttled"), retries("server_error")
    created = asyncio.run(api_for(server, sleeps).create_pod(("ns", "j"), POD))
    assert created is True
    assert len(Scripted.seen) == 3
    assert sleeps == [3.0, 1.0]  # Retry-After beats the first 0.5 s backoff; then the backoff
    assert (retries("throttled"), retries("server_error")) == (before[0] + 1, before[1] + 1)


def test_retries_end_and_the_error_reaches_the_caller(server: str) -> None:
    Scripted.answers = [(500, {})] * (len(k8s.RETRY.backoffs) + 1)
    sleeps: list[float] = []
    with pytest.raises(client.ApiException) as err:
        asyncio.run(api_for(server, sleeps).create_pod(("ns", "j"), POD))
    assert err.value.status == 500
    assert sleeps == list(k8s.RETRY.backoffs)


def test_a_final_answer_is_not_retried(server: str) -> None:
    Scripted.answers = [(422, {})]
    sleeps: list[float] = []
    with pytest.raises(Exception):  # noqa: B017 (PodRejectedError or ApiException: not retried)
        asyncio.run(api_for(server, sleeps).create_pod(("ns", "j"), POD))
    assert sleeps == [] and len(Scripted.seen) == 1


def test_a_refused_connection_is_retried() -> None:
    sleeps: list[float] = []
    with pytest.raises(Exception):  # noqa: B017 (urllib3's MaxRetryError)
        asyncio.run(api_for("http://127.0.0.1:9", sleeps).create_pod(("ns", "j"), POD))
    assert sleeps == list(k8s.RETRY.backoffs)


def test_retry_after_is_capped() -> None:
    assert k8s.RETRY.delay(0, 10_000) == k8s.RETRY.max_retry_after
    assert k8s.RETRY.delay(3, None) == k8s.RETRY.backoffs[3]
