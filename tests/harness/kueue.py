"""A real Kueue manager next to the local control plane, for the tests that need it.

    with Kueue(cp) as kq:       # CRDs applied, webhooks registered, manager ready
        ...

The binary comes from hack/kueue.sh (built once into ~/.cache/torchjob/kueue/<version>); Kueue's CRDs and
webhook configurations are read from its module in the Go module cache (`go env GOMODCACHE`), so none of
Kueue's files live in this repo. The manager runs as a local process with leader election off and its
internal certificate management off: its webhook server serves a certificate signed by the control
plane's CA (harness.pki), and the webhook configurations call it at https://127.0.0.1:<port> by `url`
with that CA as the bundle. Only the pod integration is on (docs/scheduling.md says why), and the pod
webhooks only see pods that carry a queue name, so the rest of the cluster tier never calls Kueue.
`stop()` removes the webhook configurations first: a registered webhook without its server would make
every later pod create fail.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import os
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml
from kubernetes import client

from harness import pki
from harness.controlplane import ControlPlane
from harness.kubectl import Kubectl, bind
from harness.polling import eventually
from harness.ports import free_ports
from harness.procs import Supervisor

VERSION = os.environ.get("KUEUE_VERSION", "v0.17.0")
REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "kueue.sh"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# Kueue reads its metrics serving certificate from this fixed path when its own certificate management is
# off (cmd/kueue/main.go); its Deployment mounts a Secret there. Any valid pair will do for the tests.
METRICS_CERT_DIR = Path("/etc/kueue/metrics/certs")
WEBHOOK_PREFIX = "torchjob-test-kueue-"
# Webhooks for the API groups the harness serves with the pod integration on; the others (batch Jobs,
# JobSets, Deployments, ...) belong to integrations that are off, whose paths the server does not serve.
SERVED_GROUPS = {"", "kueue.x-k8s.io"}
KUEUE_FINALIZER_PREFIX = "kueue.x-k8s.io/"


class KueueUnavailableError(RuntimeError):
    """The Kueue binary or its module is missing and cannot be built here."""


def locate() -> tuple[Path, Path]:
    """(the kueue binary, Kueue's module directory in the Go module cache), building both once."""
    if shutil.which("go") is None:
        raise KueueUnavailableError(
            "`go` is not on PATH: hack/kueue.sh builds Kueue from the Go module proxy"
        )
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise KueueUnavailableError(f"hack/kueue.sh failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    binary = Path(proc.stdout.strip().splitlines()[-1]) / "kueue"
    modcache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True)
    module = Path(modcache.stdout.strip()) / f"sigs.k8s.io/kueue@{VERSION}"
    if not (module / "config").is_dir():
        raise KueueUnavailableError(
            f"{module}/config is missing: run `go mod download sigs.k8s.io/kueue@{VERSION}`"
        )
    return binary, module


def configuration(webhook_port: int, health_port: int, metrics_port: int, cert_dir: Path) -> dict[str, Any]:
    """Kueue's Configuration: local ports, no leader election, no internal certificates, pods only."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": "kueue-system",
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": f"127.0.0.1:{metrics_port}"},
        "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "manageJobsWithoutQueueName": False,
        "integrations": {"frameworks": ["pod"]},
    }


def webhook_configurations(manifest: str, port: int, ca_bundle: bytes) -> list[dict[str, Any]]:
    """Kueue's webhook configurations for the served groups, calling https://127.0.0.1:<port> by url."""
    out = []
    for doc in yaml.safe_load_all(manifest):
        if not doc:
            continue
        hooks = [h for h in doc["webhooks"] if all(set(r["apiGroups"]) <= SERVED_GROUPS for r in h["rules"])]
        for hook in hooks:
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {
                "url": f"https://127.0.0.1:{port}{path}",
                "caBundle": base64.b64encode(ca_bundle).decode(),
            }
            if any("pods" in r["resources"] for r in hook["rules"]):
                # Kueue ignores pods without a queue name anyway; this keeps other tests' pods off it.
                hook["objectSelector"] = {"matchExpressions": [{"key": QUEUE_LABEL, "operator": "Exists"}]}
        doc["metadata"] = {"name": WEBHOOK_PREFIX + doc["metadata"]["name"]}
        doc["webhooks"] = hooks
        out.append(doc)
    return out


class Kueue:
    """Kueue's manager as a local process next to `cp`; `stop()` is safe to call twice."""

    def __init__(self, cp: ControlPlane, *, startup_timeout_s: float = 120.0) -> None:
        self.cp = cp
        self.dir = cp.dir / "kueue"
        self.startup_timeout_s = startup_timeout_s
        self.kubectl: Kubectl = bind(cp.kubeconfig)
        self._supervisor: Supervisor | None = None

    def start(self) -> Self:
        binary, module = locate()
        self.dir.mkdir(parents=True, exist_ok=True)
        webhook_port, health_port, metrics_port = free_ports(3)
        cert_dir = self.dir / "webhook-certs"
        pki.sign_serving_cert(self.cp.keys, cert_dir, "kueue-webhook", ips=("127.0.0.1",))
        _ensure_metrics_cert(self.cp.keys, self.dir)
        config = self.dir / "config.yaml"
        config.write_text(yaml.safe_dump(configuration(webhook_port, health_port, metrics_port, cert_dir)))
        crds = module / "config/components/crd/bases"
        self.kubectl("apply", "--server-side", "--force-conflicts", f"--filename={crds}")
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"--filename={crds}", timeout=70)
        self.kubectl("create", "namespace", "kueue-system", check=False)
        self._supervisor = Supervisor(self.cp.dir / "logs")
        # VisibilityOnDemand would serve an aggregated API on a fixed port; the tests read Workloads instead.
        argv = [binary, f"--config={config}", "--feature-gates=VisibilityOnDemand=false", "--zap-log-level=2"]
        manager = self._supervisor.start(
            "kueue", argv, env={**os.environ, "KUBECONFIG": str(self.cp.kubeconfig)}
        )
        ready = functools.partial(_http_ok, f"http://127.0.0.1:{health_port}/readyz")
        eventually(ready, self.startup_timeout_s, "ready (/readyz)", 0.2, watch=manager)
        hooks = (module / "config/components/webhook/manifests.yaml").read_text()
        for doc in webhook_configurations(hooks, webhook_port, self.cp.ca_cert.read_bytes()):
            self.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(doc))
        return self

    def stop(self) -> None:
        if self._supervisor is None:
            return
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            for name in ("mutating-webhook-configuration", "validating-webhook-configuration"):
                self.kubectl("delete", kind, WEBHOOK_PREFIX + name, "--ignore-not-found", check=False)
        self._supervisor.stop_all()
        self._supervisor = None
        with self.cp.api_client() as api:
            drop_finalizers(api)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def drop_finalizers(api: client.ApiClient) -> None:
    """Remove Kueue's finalizers from pods and Workloads: with the manager gone nothing else would, and
    the test namespaces could never finish deleting."""
    core: Any = client.CoreV1Api(api)
    custom: Any = client.CustomObjectsApi(api)
    for pod in core.list_pod_for_all_namespaces(label_selector=QUEUE_LABEL).items:
        kept = [f for f in pod.metadata.finalizers or [] if not f.startswith(KUEUE_FINALIZER_PREFIX)]
        if kept != (pod.metadata.finalizers or []):
            with contextlib.suppress(client.ApiException):
                core.patch_namespaced_pod(
                    pod.metadata.name, pod.metadata.namespace, {"metadata": {"finalizers": kept or None}}
                )
    for wl in custom.list_cluster_custom_object("kueue.x-k8s.io", "v1beta2", "workloads")["items"]:
        if wl["metadata"].get("finalizers"):
            with contextlib.suppress(client.ApiException):
                custom.patch_namespaced_custom_object(
                    "kueue.x-k8s.io", "v1beta2", wl["metadata"]["namespace"], "workloads",
                    wl["metadata"]["name"], {"metadata": {"finalizers": None}},
                )  # fmt: skip


def _ensure_metrics_cert(keys: pki.Pki, workdir: Path) -> None:
    # Written once per machine and never changed: a rename makes concurrent test sessions safe.
    if (METRICS_CERT_DIR / "tls.crt").exists():
        return
    staged = workdir / "metrics-certs"
    pki.sign_serving_cert(keys, staged, "kueue-metrics", ips=("127.0.0.1",))
    METRICS_CERT_DIR.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):  # another session renamed its copy first
        staged.rename(METRICS_CERT_DIR)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False
