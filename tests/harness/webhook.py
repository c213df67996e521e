"""A validating admission webhook that denies every request it is sent, served over HTTPS on loopback
with a certificate the control plane's CA signs, so the real apiserver calls it as it would a cluster's
policy webhook (by `url`, the CA as the bundle).

    with DenyingWebhook(cp.keys, workdir, "no pods here") as hook:
        body = hook.configuration("deny-pods", namespace)   # a ValidatingWebhookConfiguration
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from harness import pki

WEBHOOK_NAME = "deny.torchjob.dev"


class DenyingWebhook:
    def __init__(self, keys: pki.Pki, workdir: Path, message: str) -> None:
        self.keys, self.message = keys, message
        self.cert, self.key = pki.sign_serving_cert(
            keys, workdir / "webhook", "deny-webhook", ips=("127.0.0.1",)
        )
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.calls = 0

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hook = self

        class Deny(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.calls += 1
                answer = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {
                    "uid": review["request"]["uid"], "allowed": False,
                    "status": {"code": 403, "message": hook.message}}}  # fmt: skip
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: Any) -> None:
                pass

        return Deny

    def configuration(self, name: str, namespace: str) -> dict[str, Any]:
        """A ValidatingWebhookConfiguration sending pod creates in `namespace` (only) here."""
        port = self.server.server_address[1]
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [{
                "name": WEBHOOK_NAME,
                "clientConfig": {"url": f"https://127.0.0.1:{port}/validate",
                                 "caBundle": base64.b64encode(self.keys.ca_cert.read_bytes()).decode()},
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                           "resources": ["pods"], "scope": "Namespaced"}],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "failurePolicy": "Fail", "sideEffects": "None", "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
            }],
        }  # fmt: skip

    def __enter__(self) -> Self:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.shutdown()
        self.server.server_close()
