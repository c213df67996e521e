"""The operator's raw requests (answers it does not deserialize) hand their connection back to the pool:
five pod creates and a pod list against a real HTTP/1.1 server travel on one keep-alive connection, and
the list's body still reaches its caller."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest
from kubernetes import client
from torchjob_operator import k8s


class CountingHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the API server speaks
    connections: ClassVar[set[tuple[str, int]]] = set()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._answer(201, {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p"}})

    def do_GET(self) -> None:
        self._answer(200, {"kind": "PodList", "items": [{"metadata": {"name": "p"}}]})

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
    CountingHandler.connections = set()
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
