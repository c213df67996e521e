"""host-node-0: a KWOK node whose pods a test runs as local processes.

KWOK plays pod status but runs nothing, so nothing answers where the API server sends `kubectl logs` or
its pod proxy. On this node both paths reach real programs:

- pod logs: apiserver -> the node's kubelet endpoint (kwok's server) -> a CRI-format log file that
  `HostPod` fills with the process's output (kwok `Logs` object per pod);
- pod proxy (`/pods/NAME:PORT/proxy/...`): apiserver -> the pod IP, which is this host's own address
  (the proxy refuses loopback) -> the port the process listens on;
- a graceful delete (Kueue's preemption): `HostPod.exit_on_delete` sends the process SIGTERM, and a pod
  that finalizers hold ends Failed with the process's own exit code once it has exited.

The node is tainted, so only pods that tolerate it (`TOLERATION`) land there.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from kubernetes import client

from harness import nodes
from harness.polling import eventually
from harness.procs import kill_tree

HOST_NODE = "host-node-0"  # kwok-stages.yaml gives pods on this node their node's IP
NODE_IP_ANNOTATION = "kwok.torchjob.dev/node-ip"
EXIT_ANNOTATION = "kwok.torchjob.dev/exit-code"
AWAITS_EXIT_ANNOTATION = "kwok.torchjob.dev/delete-awaits-exit"  # kwok-stages.yaml
TAINT = {"key": "torchjob.dev/host-node", "value": "true", "effect": "NoSchedule"}
TOLERATION = {"key": TAINT["key"], "operator": "Equal", "value": TAINT["value"], "effect": TAINT["effect"]}
KWOK_GROUP, KWOK_VERSION = "kwok.x-k8s.io", "v1alpha1"

# kwok's `Logs` kind (served with `kwok --enable-crds=Logs`); kwok reads its spec, so no schema here.
LOGS_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"logs.{KWOK_GROUP}"},
    "spec": {
        "group": KWOK_GROUP,
        "scope": "Namespaced",
        "names": {"kind": "Logs", "listKind": "LogsList", "plural": "logs", "singular": "logs"},
        "versions": [
            {
                "name": KWOK_VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
        ],
    },
}


def host_ip() -> str | None:
    """This machine's own non-loopback IPv4 address, or None when it has no routed interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # UDP connect sends nothing: it only picks the source address
        except OSError:
            return None
        ip = str(s.getsockname()[0])
    addr = ipaddress.ip_address(ip)
    return None if addr.is_loopback or addr.is_link_local or addr.is_unspecified else ip


def _create_or_keep(create: Callable[[dict[str, Any]], Any], body: dict[str, Any]) -> None:
    """Creates a cluster-scoped object; one left by an earlier start (409) is kept."""
    try:
        create(body)
    except client.ApiException as exc:
        if exc.status != 409:
            raise


def install_logs_crd(api: client.ApiClient, timeout_s: float = 30) -> None:
    ext: Any = client.ApiextensionsV1Api(api)
    _create_or_keep(ext.create_custom_resource_definition, LOGS_CRD)
    deadline = time.monotonic() + timeout_s
    while True:
        crd = ext.read_custom_resource_definition(LOGS_CRD["metadata"]["name"])
        if any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or []):
            return
        if time.monotonic() > deadline:
            raise TimeoutError("kwok's Logs CRD is not Established")
        time.sleep(0.1)


def create_host_node(api: client.ApiClient, ip: str, wait_ready_s: float = 30) -> None:
    """Creates (or keeps) host-node-0 at `ip`, tainted, and waits until kwok marks it Ready."""
    body = nodes.node_manifest(HOST_NODE, cpu="16", memory="64Gi")
    body["metadata"]["annotations"][NODE_IP_ANNOTATION] = ip
    body["spec"]["taints"] = [TAINT]
    core: Any = client.CoreV1Api(api)
    _create_or_keep(core.create_node, body)
    nodes.wait_ready(api, [HOST_NODE], wait_ready_s)


def cri_line(text: str, stream: str = "stdout") -> str:
    """One line in the CRI log format the kubelet (and kwok) read: `<RFC3339Nano> <stream> F <text>`."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
    return f"{now} {stream} F {text}\n"


class PodLog:
    """A pod's container log: a CRI-format file that kwok serves as the trainer container's logs."""

    def __init__(self, api: client.ApiClient, namespace: str, pod: str, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        body = {
            "apiVersion": f"{KWOK_GROUP}/{KWOK_VERSION}",
            "kind": "Logs",
            "metadata": {"name": pod, "namespace": namespace},
            "spec": {"logs": [{"containers": ["trainer"], "logsFile": str(path), "follow": True}]},
        }
        custom: Any = client.CustomObjectsApi(api)
        custom.create_namespaced_custom_object(KWOK_GROUP, KWOK_VERSION, namespace, "logs", body)

    def write(self, *lines: str) -> None:
        with self.path.open("a") as f:
            f.writelines(cri_line(line) for line in lines)


def end_pod(api: client.ApiClient, namespace: str, pod: str, exit_code: int) -> None:
    """Tells KWOK the pod's container exited with `exit_code` (kwok-stages.yaml)."""
    core: Any = client.CoreV1Api(api)
    patch = {"metadata": {"annotations": {EXIT_ANNOTATION: str(exit_code)}}}
    core.patch_namespaced_pod(pod, namespace, patch)


def _local_env(
    container: dict[str, Any], pod_name: str, namespace: str, workdir: Path, rdzv_port: int | None
) -> dict[str, str]:
    from torchjob_cli.localplan import free_port, resolve_env  # the CLI's own local-run helpers

    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    env.update(resolve_env(container.get("env") or [], pod_name=pod_name, namespace=namespace))
    # Pods on this node share the host's network: the rendezvous node 0's pod would host on its own
    # address moves to loopback and a free port (the same `rdzv_port` for every pod of one job).
    port = rdzv_port or free_port()
    if "PET_MASTER_ADDR" in env:
        env["PET_MASTER_ADDR"], env["PET_MASTER_PORT"] = "127.0.0.1", str(port)
    if "PET_RDZV_ENDPOINT" in env:
        env["PET_RDZV_ENDPOINT"] = f"127.0.0.1:{port}"
    # The pod's checkpoint volume is the work directory (shared by pods given the same one, like RWX).
    if env.get("TORCHJOB_CHECKPOINT_DIR"):
        env["TORCHJOB_CHECKPOINT_DIR"] = str(workdir / "checkpoints")
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class HostPod:
    """Runs a pod's trainer container (its command, args and env) as a local process group; its output
    becomes the pod's log and its exit code ends the pod in KWOK."""

    def __init__(self, api: client.ApiClient, pod: Any, workdir: Path, rdzv_port: int | None = None) -> None:
        self.api = api
        self.rdzv_port = rdzv_port
        obj: dict[str, Any] = api.sanitize_for_serialization(pod)
        self.name, self.namespace = obj["metadata"]["name"], obj["metadata"]["namespace"]
        (self.container,) = [c for c in obj["spec"]["containers"] if c["name"] == "trainer"]
        self.workdir = workdir
        self.log = PodLog(api, self.namespace, self.name, workdir / f"{self.name}.log")
        self.proc: subprocess.Popen[str] | None = None
        self._pump: threading.Thread | None = None

    def __enter__(self) -> Self:
        # A real process answers this pod's delete: KWOK waits for its exit code (kwok-stages.yaml).
        core: Any = client.CoreV1Api(self.api)
        core.patch_namespaced_pod(
            self.name, self.namespace, {"metadata": {"annotations": {AWAITS_EXIT_ANNOTATION: "true"}}}
        )
        argv = [*self.container.get("command", []), *self.container.get("args", [])]
        self.proc = subprocess.Popen(
            argv,
            env=_local_env(self.container, self.name, self.namespace, self.workdir, self.rdzv_port),
            cwd=self.workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # one process group: the agent and its workers go together
        )
        self._pump = threading.Thread(target=self._copy_output, daemon=True)
        self._pump.start()
        return self

    def _copy_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.write(line.rstrip("\n"))

    def wait(self, timeout: float) -> int:
        """Waits for the process, then ends the pod with its exit code."""
        assert self.proc is not None
        code = self.proc.wait(timeout=timeout)
        if self._pump is not None:
            self._pump.join(timeout=10)
        end_pod(self.api, self.namespace, self.name, code)
        return code

    def exit_on_delete(self, timeout: float) -> int:
        """The kubelet's part of a graceful delete (a preemption, an eviction): once the pod is marked
        deleted, SIGTERM to the container's main process only (the launcher, as PID 1 gets it), then the
        pod ends with the process's exit code. Returns that code."""
        assert self.proc is not None
        core: Any = client.CoreV1Api(self.api)

        def deleting() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode} before its delete")
            return core.read_namespaced_pod(self.name, self.namespace).metadata.deletion_timestamp is not None

        eventually(deleting, timeout, f"{self.name} marked deleted", interval_s=0.2)
        self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def output(self) -> str:
        return self.log.path.read_text(errors="replace")

    def kill(self) -> None:
        """The node is lost: every process at once, and the pod ends as a SIGKILLed container does."""
        assert self.proc is not None
        kill_tree(self.proc.pid)
        self.proc.wait(timeout=30)
        end_pod(self.api, self.namespace, self.name, 128 + signal.SIGKILL)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            kill_tree(self.proc.pid)
            self.proc.wait(timeout=30)
        if self._pump is not None:
            self._pump.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
