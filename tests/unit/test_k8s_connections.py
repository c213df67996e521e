"""The operator's plain-JSON requests (`k8s.send`) against a real HTTP/1.1 server: they hand their
connection back to the pool (five pod creates and a pod list travel on one keep-alive connection, and the
list's body still reaches its caller), and each goes to its path with its verb, content type, query and
body as the API server expects them."""

from __future__ import annotations

import asyncio
import http.server
import json
import re
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest
from kubernetes import client
from torchjob_operator import k8s


class CountingHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the API server speaks
    connections: ClassVar[set[tuple[str, int]]] = set()
    #: (verb, path with query, content type, JSON body or None) of every request.
    seen: ClassVar[list[tuple[str, str, str, object]]] = []
    authorizations: ClassVar[list[str]] = []

    def _note(self) -> None:
        self.authorizations.append(self.headers.get("Authorization", ""))
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length)) if length else None
        self.seen.append((self.command, self.path, self.headers.get("Content-Type", ""), body))

    def do_POST(self) -> None:
        self._note()
        self._answer(201, {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p"}})

    def do_GET(self) -> None:
        self._note()
        self._answer(200, {"kind": "PodList", "items": [{"metadata": {"name": "p"}}]})

    def do_PATCH(self) -> None:
        self._note()
        self._answer(200, {"kind": "TrainingJob", "status": {"phase": "Running"}})

    def do_DELETE(self) -> None:
        self._note()  # a collection is deleted; a single pod is already gone
        collection = "?" in self.path
        self._answer(200 if collection else 404, {"kind": "Status", "code": 200 if collection else 404})

    def _answer(self, code: int, doc: dict[str, object]) -> None:
        self.connections.add(self.client_address)
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[http.server.ThreadingHTTPServer]:
    CountingHandler.connections, CountingHandler.seen, CountingHandler.authorizations = set(), [], []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CountingHandler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_raw_answers_reuse_one_connection_and_keep_their_body(
    server: http.server.ThreadingHTTPServer,
) -> None:
    config = client.Configuration(host=f"http://127.0.0.1:{server.server_address[1]}")
    with client.ApiClient(config) as api_client:
        api = k8s.KubeApi(api_client, k8s.RequestLedger())

        async def create_five_then_list() -> tuple[list[bool], list[dict[str, object]]]:
            job, body = ("ns", "j"), {"metadata": {"name": "p"}}
            created = [await api.create_pod(job, body) for _ in range(5)]
            return created, await api.list_pods(job)

        created, listed = asyncio.run(create_five_then_list())
        assert created == [True] * 5 and listed == [{"metadata": {"name": "p"}}]
    assert len(CountingHandler.connections) == 1


def test_each_call_sends_its_verb_path_content_type_and_body(server: http.server.ThreadingHTTPServer) -> None:
    config = client.Configuration(host=f"http://127.0.0.1:{server.server_address[1]}")
    with client.ApiClient(config) as api_client:
        api, job = k8s.KubeApi(api_client, k8s.RequestLedger()), ("ns", "j")

        async def calls() -> dict[str, object]:
            status = await api.patch_status(job, {"phase": "Running"}, "41")
            await api.post_event(job, "uid-1", "Normal", "AllRanksRunning", "all 2 ranks are running")
            await api.delete_active_pods(job)
            await api.delete_pod(job, "j-0")  # 404 is success
            return status

        assert asyncio.run(calls()) == {"kind": "TrainingJob", "status": {"phase": "Running"}}
    patch, event, collection, delete = CountingHandler.seen
    assert patch == (
        "PATCH",
        "/apis/torchjob.dev/v1alpha1/namespaces/ns/trainingjobs/j/status",
        "application/merge-patch+json",
        {"status": {"phase": "Running"}, "metadata": {"resourceVersion": "41"}},
    )
    assert event[:3] == ("POST", "/api/v1/namespaces/ns/events", "application/json")
    assert isinstance(event[3], dict) and event[3]["involvedObject"]["uid"] == "uid-1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event[3]["firstTimestamp"])  # RFC 3339
    assert collection[:2] == (
        "DELETE",
        "/api/v1/namespaces/ns/pods?labelSelector=torchjob.dev/job-name%3Dj"
        "&fieldSelector=status.phase%21%3DFailed%2Cstatus.phase%21%3DSucceeded",
    )
    assert delete[:2] == ("DELETE", "/api/v1/namespaces/ns/pods/j-0")


def test_an_error_answer_raises_the_clients_api_exception(server: http.server.ThreadingHTTPServer) -> None:
    config = client.Configuration(host=f"http://127.0.0.1:{server.server_address[1]}")
    with client.ApiClient(config) as api_client, pytest.raises(client.ApiException) as err:
        k8s.send(api_client, k8s.Request("DELETE", "/api/v1/namespaces/ns/pods/p"))
    assert err.value.status == 404 and json.loads(err.value.body or "")["code"] == 404


def test_requests_carry_the_clients_bearer_token_and_its_refresh(
    server: http.server.ThreadingHTTPServer,
) -> None:
    # As load_incluster_config sets them up: the token in api_key, re-read by a refresh hook before use.
    config = client.Configuration(host=f"http://127.0.0.1:{server.server_address[1]}")
    config.api_key = {"authorization": "Bearer first"}
    tokens = iter(["Bearer second"])

    def refresh(conf: client.Configuration) -> None:
        conf.api_key["authorization"] = next(tokens, conf.api_key["authorization"])

    config.refresh_api_key_hook = refresh
    with client.ApiClient(config) as api_client:
        k8s.send(api_client, k8s.Request("GET", "/api/v1/namespaces/ns/pods"))
    assert CountingHandler.authorizations == ["Bearer second"]
