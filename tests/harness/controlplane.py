"""One real, local Kubernetes control plane: etcd, kube-apiserver, kube-scheduler,
kube-controller-manager and kwok as processes on free 127.0.0.1 ports, in one temp directory.

    with ControlPlane() as cp:
        subprocess.run(["kubectl", "--kubeconfig", cp.kubeconfig, "get", "nodes"])

The apiserver runs with RBAC, a static admin token (group system:masters), a private CA for TLS and an
RSA key for service-account tokens (shared with the controller-manager, so TokenRequest and the
ServiceAccount admission work as in a cluster). `flags` builds the command lines; `procs` owns the
processes; docs/cluster-tests.md explains the tier.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

from kubernetes import client, config

from harness import audit, binaries, flags, hostnode, kubeconfig, nodeflags, nodepki, nodes, pki
from harness.polling import eventually
from harness.ports import free_ports
from harness.procs import Component, ComponentFailedError, Supervisor

ADMIN_USER = "admin"
KEEP_DIR_ENV = "TORCHJOB_KEEP_CONTROL_PLANE_DIR"
START_ATTEMPTS = 3


def client_from_kubeconfig(path: Path) -> client.ApiClient:
    """A new ApiClient for a kubeconfig file (admin or service account); the caller closes it."""
    return cast(client.ApiClient, config.new_client_from_config(config_file=str(path)))  # type: ignore[no-untyped-call]


class ControlPlane:
    """Starts on `start()` (or `with`), stops every process on `stop()`; safe to stop twice.

    Without `workdir` it works in a new temp dir that `stop()` removes (set
    TORCHJOB_KEEP_CONTROL_PLANE_DIR=1 to keep it); a given `workdir` is never removed.
    """

    def __init__(
        self,
        *,
        bin_dir: Path | None = None,
        workdir: Path | None = None,
        default_nodes: bool = True,
        audit: bool = False,
        audit_namespaces: tuple[str, ...] = (),
        startup_timeout_s: float = 120.0,
        node_ip: str | None = None,
    ) -> None:
        self.bin_dir = bin_dir
        self._own_dir = workdir is None
        self.dir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="torchjob-cp-"))
        self.default_nodes = default_nodes
        # With `audit`, the apiserver logs every request here (see harness.audit); with `audit_namespaces`
        # only those in these namespaces.
        self.audit_log: Path | None = self.dir / "audit.log" if audit or audit_namespaces else None
        self.audit_namespaces = audit_namespaces
        self.startup_timeout_s = startup_timeout_s
        # For a real node (harness.realnode): the apiserver serves on this IP instead of loopback and
        # reconciles the `kubernetes` Service endpoint to it, so pods reach it with in-cluster config.
        self.node_ip = node_ip
        self.token = secrets.token_urlsafe(32)
        self.kubeconfig = self.dir / "kubeconfig"
        self.server = ""
        self.timings: dict[str, float] = {}
        self._supervisor: Supervisor | None = None
        self._pki: pki.Pki | None = None

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> Self:
        started = time.monotonic()
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self._start()
                break
            except ComponentFailedError as exc:
                self.stop(keep_dir=True)
                # A free port can be taken by someone else before our process binds it: start afresh.
                if "address already in use" not in str(exc) or attempt == START_ATTEMPTS:
                    raise  # the directory stays for a look; the error already carries the log tail
                for part in ("etcd", "logs"):
                    shutil.rmtree(self.dir / part, ignore_errors=True)
            except BaseException:
                # Keep the directory only when a component ran and left logs to read.
                self.stop(keep_dir=any((self.dir / "logs").glob("*.log")))
                raise
        self.timings["total"] = time.monotonic() - started
        return self

    def stop(self, *, keep_dir: bool = False) -> None:
        if self._supervisor is not None:
            self._supervisor.stop_all()
            self._supervisor = None
        if self._own_dir and not keep_dir and not os.environ.get(KEEP_DIR_ENV):
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def components(self) -> dict[str, Component]:
        return {c.name: c for c in self._supervisor.components} if self._supervisor else {}

    @property
    def ca_cert(self) -> Path:
        assert self._pki is not None, "control plane not started"
        return self._pki.ca_cert

    @property
    def keys(self) -> pki.Pki:
        """The CA and keys, for other local servers whose certificates the apiserver must trust."""
        assert self._pki is not None, "control plane not started"
        return self._pki

    def api_client(self) -> client.ApiClient:
        """A new admin ApiClient; the caller closes it."""
        return client_from_kubeconfig(self.kubeconfig)

    # -- start-up ----------------------------------------------------------------------------------------

    def _start(self) -> None:
        t0 = time.monotonic()
        bin_dir = self.bin_dir or binaries.locate()
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir(exist_ok=True)
        ports = flags.Ports(*free_ports(6))
        self.server = f"https://{self.node_ip or '127.0.0.1'}:{ports.apiserver}"
        ips = ("127.0.0.1", flags.SERVICE_IP, *([self.node_ip] if self.node_ip else []))
        self._pki = keys = pki.generate(self.dir / "pki", ips=ips)
        tokens = self.dir / "tokens.csv"
        tokens.write_text(f'{self.token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
        tokens.chmod(0o600)
        kubeconfig.write(
            self.kubeconfig,
            kubeconfig.token_kubeconfig(self.server, keys.ca_cert.read_bytes(), ADMIN_USER, self.token),
        )
        lo = flags.Layout(bin_dir, self.dir, ports, keys, self.kubeconfig, tokens)
        self.timings["prepare"] = time.monotonic() - t0
        sup = self._supervisor = Supervisor(self.dir / "logs")
        budget = self.startup_timeout_s

        etcd = sup.start("etcd", flags.etcd(lo))
        eventually(functools.partial(_http_ok, f"{lo.etcd_url}/health"), budget, "healthy", 0.2, watch=etcd)
        self.timings["etcd"] = time.monotonic() - t0

        argv = flags.kube_apiserver(lo)
        if self.node_ip:
            kubelet_client = nodepki.apiserver_kubelet_client(keys)
            argv = nodeflags.apiserver_for_node(argv, kubelet_client, keys.ca_cert, self.node_ip)
        if self.audit_log is not None:
            policy = self.dir / "audit-policy.json"
            policy.write_text(json.dumps(audit.policy(self.audit_namespaces)))
            argv += [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}",
                     "--audit-log-format=json", "--audit-log-mode=blocking"]  # fmt: skip
        self._wait_apiserver_ready(sup.start("kube-apiserver", argv), budget)
        self.timings["kube-apiserver"] = time.monotonic() - t0

        with self.api_client() as api:  # kwok serves pod logs from these objects (harness.hostnode)
            hostnode.install_logs_crd(api, timeout_s=budget)
        scheduler = sup.start("kube-scheduler", flags.kube_scheduler(lo))
        kcm = sup.start("kube-controller-manager", flags.kube_controller_manager(lo))
        # kwok also reads ~/.kwok/kwok.yaml: keep a developer's file out of the tests.
        kwok = sup.start("kwok", flags.kwok(lo), env={**os.environ, "HOME": str(self.dir)})
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # their serving certs are self-signed in memory; health only
        for component, url, ctx in (
            (scheduler, f"https://127.0.0.1:{ports.scheduler}/healthz", insecure),
            (kcm, f"https://127.0.0.1:{ports.controller_manager}/healthz", insecure),
            (kwok, f"http://127.0.0.1:{ports.kwok}/healthz", None),
        ):
            eventually(
                functools.partial(_http_ok, url, context=ctx),
                budget,
                "healthy (/healthz)",
                0.2,
                watch=component,
            )
        self.timings["components"] = time.monotonic() - t0

        with self.api_client() as api:
            if self.default_nodes:
                try:
                    nodes.create_default_nodes(api, wait_ready_s=budget)
                except TimeoutError as exc:
                    raise ComponentFailedError(kwok, str(exc)) from exc
            self._wait_default_service_account(api, kcm, budget)
        self.timings["nodes"] = time.monotonic() - t0

    def _wait_apiserver_ready(self, apiserver: Component, timeout_s: float) -> None:
        ready = functools.partial(
            _http_ok,
            f"{self.server}/readyz",
            context=ssl.create_default_context(cafile=str(self.ca_cert)),
            token=self.token,
        )
        eventually(ready, timeout_s, "ready (/readyz)", 0.2, watch=apiserver)

    def restart_apiserver(self) -> None:
        """An API server fault: kube-apiserver stopped (SIGTERM, as a rolling upgrade does) and started again
        on the same port and etcd; returns once it is ready. Every client's watches break, and its watch
        cache restarts at etcd's current revision, so a watch resumed from an older resourceVersion gets
        410 Gone."""
        assert self._supervisor is not None, "control plane not started"
        old = self.components["kube-apiserver"]
        self._wait_apiserver_ready(self._supervisor.restart(old), self.startup_timeout_s)

    def _wait_default_service_account(self, api: client.ApiClient, kcm: Component, timeout_s: float) -> None:
        # ServiceAccount admission rejects pods until the controller-manager creates `default`.
        exists = functools.partial(default_service_account_exists, api, "default")
        eventually(exists, timeout_s, "creating ServiceAccount default/default", 0.2, watch=kcm)


def default_service_account_exists(api: client.ApiClient, namespace: str) -> bool:
    """Whether the controller-manager has created `namespace/default`: ServiceAccount admission rejects
    pods until it has."""
    core: Any = client.CoreV1Api(api)  # Any: the typed models make every field Optional
    try:
        core.read_namespaced_service_account("default", namespace)
    except client.ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _http_ok(url: str, *, context: ssl.SSLContext | None = None, token: str | None = None) -> bool:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=2, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def service_account_kubeconfig(
    cp: ControlPlane, namespace: str, name: str, *, expiration_s: int = 24 * 3600
) -> Path:
    """A kubeconfig that authenticates as ServiceAccount `namespace/name` (created if missing).

    The token comes from the TokenRequest API, so it is exactly what a pod of that ServiceAccount
    would get: RBAC decides everything it may do. For least-privilege tests.
    """
    with cp.api_client() as api:
        core: Any = client.CoreV1Api(api)  # Any: dict bodies, and every model field is Optional
        try:
            core.read_namespaced_service_account(name, namespace)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=expiration_s)
        )
        token = core.create_namespaced_service_account_token(name, namespace, request).status.token
    user = f"system:serviceaccount:{namespace}:{name}"
    return kubeconfig.write(
        cp.dir / "kubeconfigs" / f"{namespace}.{name}.yaml",
        kubeconfig.token_kubeconfig(cp.server, cp.ca_cert.read_bytes(), user, token, namespace=namespace),
    )
