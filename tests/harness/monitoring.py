"""The Prometheus Operator on the real node: Prometheus finds trainer pods through the chart's PodMonitor
and ServiceMonitor, exactly as in a cluster with kube-prometheus.

The operator (hack/promoperator.sh: built from the Go module proxy) runs as a process on this machine
against the admin kubeconfig, like the controller-manager. It renders the Prometheus StatefulSet, whose
pod runs on the real node from two images made here (no registry serves quay.io): Prometheus built by
hack/promoperator.sh from its Go module (with only the kubernetes service discovery: Debian's prometheus
package has none) and the operator's config reloader, each a static binary in a one-layer image. The
operator is told the binary's version (`spec.version`), so the configuration it generates matches it.
"""

from __future__ import annotations

import os
import subprocess
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from harness import nodepki
from harness.kubectl import Kubectl, bind
from harness.ports import free_ports
from harness.procs import Component, Supervisor
from harness.realnode import RealNode, single_layer_image, wait_for

if TYPE_CHECKING:
    from harness.nodecluster import NodeCluster

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "promoperator.sh"
NAMESPACE = "monitoring"
NAME = "torchjob"
PROMETHEUS_IMAGE = "torchjob.local/prometheus"
RELOADER_IMAGE = "torchjob.local/prometheus-config-reloader"


def locate() -> Path:
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"hack/promoperator.sh failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def prometheus_version(binary: Path) -> str:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True)
    text = out.stdout + out.stderr
    return "v" + text.split("version ", 1)[1].split()[0].split("+")[0]


def _libs(binary: Path) -> dict[str, Path]:
    """The shared objects `ldd` names for a binary, at the paths the dynamic loader looks them up."""
    found = {}
    ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False).stdout
    for line in ldd.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if path.startswith("/"):
            found[path.lstrip("/")] = Path(path)
    return found


def import_images(node: RealNode, bin_dir: Path, version: str) -> tuple[str, str]:
    prometheus = bin_dir / "prometheus"
    prom_tag = f"{PROMETHEUS_IMAGE}:{version}"
    node.import_image_bytes(single_layer_image(
        prom_tag, {"bin/prometheus": prometheus, **_libs(prometheus)},
        {"Entrypoint": ["/bin/prometheus"], "User": "65534:65534"},
    ))  # fmt: skip
    reloader = bin_dir / "prometheus-config-reloader"
    reloader_tag = f"{RELOADER_IMAGE}:{bin_dir.name}"
    node.import_image_bytes(single_layer_image(
        reloader_tag, {"bin/prometheus-config-reloader": reloader},
        {"Entrypoint": ["/bin/prometheus-config-reloader"], "User": "65534:65534"},
    ))  # fmt: skip
    return prom_tag, reloader_tag


def install_crds(kubectl: Kubectl, bin_dir: Path) -> None:
    for crd in sorted((bin_dir / "crds").glob("*.yaml")):
        kubectl("apply", "--server-side", "--force-conflicts", f"--filename={crd}", timeout=120)
    kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", f"--filename={bin_dir / 'crds'}", timeout=90
    )


def start_operator(
    sup: Supervisor, bin_dir: Path, nc: NodeCluster, reloader_image: str, port: int
) -> Component:
    # Out of cluster the operator takes the apiserver URL and a client certificate (it has no kubeconfig
    # flag): one from the harness CA, in system:masters as a cluster-wide operator's RBAC would allow.
    keys = nc.cp._pki
    assert keys is not None
    cert = nodepki.sign(keys, "prometheus-operator-client", cn="torchjob:prometheus-operator",
                        orgs=("system:masters",), serial=20)  # fmt: skip
    operator = sup.start("prometheus-operator", [
        str(bin_dir / "operator"), f"--apiserver={nc.cp.server}", f"--ca-file={keys.ca_cert}",
        f"--cert-file={cert.cert}", f"--key-file={cert.key}",
        f"--prometheus-config-reloader={reloader_image}",
        f"--web.listen-address=127.0.0.1:{port}", "--log-level=info",
    ], env={**os.environ})  # fmt: skip

    def healthy() -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    wait_for(healthy, operator, "healthy (/healthz)", 60)
    return operator


def prometheus_objects(image: str, version: str) -> list[dict[str, Any]]:
    """Namespace, RBAC for kubernetes_sd, and one Prometheus selecting every PodMonitor/ServiceMonitor."""
    read = ["get", "list", "watch"]
    rules = [
        {"apiGroups": [""], "resources": ["nodes", "services", "endpoints", "pods"], "verbs": read},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
        {"nonResourceURLs": ["/metrics"], "verbs": ["get"]},
    ]  # fmt: skip
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "prometheus", "namespace": NAMESPACE}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "torchjob-e2e-prometheus"}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "torchjob-e2e-prometheus"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "torchjob-e2e-prometheus"},
         "subjects": [{"kind": "ServiceAccount", "name": "prometheus", "namespace": NAMESPACE}]},
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "Prometheus",
         "metadata": {"name": NAME, "namespace": NAMESPACE},
         "spec": {
             "image": image, "version": version, "replicas": 1, "serviceAccountName": "prometheus",
             "podMonitorSelector": {}, "podMonitorNamespaceSelector": {},
             "serviceMonitorSelector": {}, "serviceMonitorNamespaceSelector": {},
             "scrapeInterval": "5s", "evaluationInterval": "5s",
             "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
         }},
    ]  # fmt: skip


def api_path(endpoint: str) -> str:
    """The apiserver's pod-proxy path to the Prometheus pod's HTTP API (`query?...`, `targets`)."""
    return f"/api/v1/namespaces/{NAMESPACE}/pods/prometheus-{NAME}-0:9090/proxy/api/v1/{endpoint}"


def query_path(expr: str) -> str:
    return api_path(f"query?{urllib.parse.urlencode({'query': expr})}")


class PrometheusStack:
    """CRDs, the operator process, and one Prometheus pod on the node; `stop()` ends the operator (the pod
    goes with the node). Install the chart with its monitors between `install_crds()` and `start()`."""

    def __init__(self, nc: NodeCluster) -> None:
        self.nc = nc
        self.bin_dir = locate()
        self.version = prometheus_version(self.bin_dir / "prometheus")
        self.kubectl = bind(nc.kubeconfig)
        self._supervisor: Supervisor | None = None

    def install_crds(self) -> None:
        install_crds(self.kubectl, self.bin_dir)

    def start(self, timeout_s: float = 180) -> None:
        prom_image, reloader_image = import_images(self.nc.node, self.bin_dir, self.version)
        self._supervisor = Supervisor(self.nc.cp.dir / "logs")
        (port,) = free_ports(1)
        operator = start_operator(self._supervisor, self.bin_dir, self.nc, reloader_image, port)
        self.kubectl(
            "apply", "-f", "-", input=yaml.safe_dump_all(prometheus_objects(prom_image, self.version))
        )

        def ready() -> bool:
            ready_status = "jsonpath={.status.conditions[?(@.type=='Ready')].status}"
            pod = f"prometheus-{NAME}-0"
            proc = self.kubectl("get", "pod", "-n", NAMESPACE, pod, "-o", ready_status, check=False)
            return proc.stdout.strip() == "True"

        wait_for(ready, operator, f"pod {NAMESPACE}/prometheus-{NAME}-0 Ready", timeout_s)

    def stop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.stop_all()
            self._supervisor = None
