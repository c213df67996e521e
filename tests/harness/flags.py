"""Command lines of the control-plane components (pure: paths and ports in, argv out).

Flags follow envtest and kwokctl (../shared/design/cluster-test-infra.md sections 2, 3.2 and 8).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness import nodes
from harness.pki import Pki

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # first address of SERVICE_CIDR: the `kubernetes` Service
POD_CIDR = "10.244.0.0/16"  # kwok hands pod IPs out of this
NODE_IP = "10.0.0.1"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
STAGES_FILE = Path(__file__).with_name("kwok-stages.yaml")
# Kubernetes' own gang scheduling (alpha in 1.36, off by default): the Workload/PodGroup API and the
# scheduler's GangScheduling plugin. Every component gets the same gates, as a cluster would.
FEATURE_GATES = "--feature-gates=GenericWorkload=true,GangScheduling=true"
RUNTIME_CONFIG = "--runtime-config=scheduling.k8s.io/v1alpha2=true"  # alpha APIs are not served by default


@dataclass(frozen=True)
class Ports:
    etcd: int
    etcd_peer: int
    apiserver: int
    scheduler: int
    controller_manager: int
    kwok: int


@dataclass(frozen=True)
class Layout:
    """Everything a command line refers to: binaries, the run directory, ports and key material."""

    bin_dir: Path
    run_dir: Path
    ports: Ports
    pki: Pki
    kubeconfig: Path
    tokens: Path

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.etcd}"


def etcd(lo: Layout) -> list[str]:
    peer = f"http://127.0.0.1:{lo.ports.etcd_peer}"
    return [
        str(lo.bin_dir / "etcd"), "--name=default", f"--data-dir={lo.run_dir / 'etcd'}",
        f"--listen-client-urls={lo.etcd_url}", f"--advertise-client-urls={lo.etcd_url}",
        f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=default={peer}",
        "--unsafe-no-fsync",  # test data: durability buys nothing and fsync is slow on shared disks
        "--auto-compaction-retention=1", "--log-level=warn",
    ]  # fmt: skip


def kube_apiserver(lo: Layout) -> list[str]:
    keys = lo.pki
    return [
        str(lo.bin_dir / "kube-apiserver"),
        f"--etcd-servers={lo.etcd_url}",
        "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={lo.ports.apiserver}",
        f"--cert-dir={keys.ca_cert.parent}",
        f"--tls-cert-file={keys.serving_cert}", f"--tls-private-key-file={keys.serving_key}",
        # The CA flags fill the extension-apiserver-authentication ConfigMap, which the scheduler
        # and controller-manager read for delegated authentication (else they log errors forever).
        f"--client-ca-file={keys.ca_cert}",
        f"--requestheader-client-ca-file={keys.ca_cert}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--authorization-mode=RBAC", f"--token-auth-file={lo.tokens}",
        f"--service-account-issuer={SA_ISSUER}",
        f"--service-account-key-file={keys.sa_pub}",
        f"--service-account-signing-key-file={keys.sa_key}",
        "--allow-privileged=true",
        # Endpoints validation rejects loopback addresses, so nothing reconciles the
        # `kubernetes` Service endpoints (as in envtest).
        "--endpoint-reconciler-type=none",
        # Logs and exec go to the node's kubelet endpoint (kwok's server here): by IP, as nodes have
        # no resolvable hostnames.
        "--kubelet-preferred-address-types=InternalIP",
        "--profiling=false",
        FEATURE_GATES, RUNTIME_CONFIG,
    ]  # fmt: skip


def _delegated(lo: Layout) -> list[str]:
    kc = str(lo.kubeconfig)
    return [f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}"]


def kube_scheduler(lo: Layout) -> list[str]:
    return [
        str(lo.bin_dir / "kube-scheduler"), *_delegated(lo), "--leader-elect=false",
        "--bind-address=127.0.0.1", f"--secure-port={lo.ports.scheduler}", FEATURE_GATES,
    ]  # fmt: skip


def kube_controller_manager(lo: Layout) -> list[str]:
    return [
        str(lo.bin_dir / "kube-controller-manager"), *_delegated(lo), "--leader-elect=false",
        "--bind-address=127.0.0.1", f"--secure-port={lo.ports.controller_manager}",
        "--controllers=*",
        # Signs ServiceAccount tokens and publishes kube-root-ca.crt into every namespace.
        f"--service-account-private-key-file={lo.pki.sa_key}", f"--root-ca-file={lo.pki.ca_cert}",
        "--use-service-account-credentials=false",
        "--kube-api-qps=200", "--kube-api-burst=400", FEATURE_GATES,
    ]  # fmt: skip


def kwok(lo: Layout) -> list[str]:
    key, value = nodes.MANAGED_ANNOTATION
    return [
        str(lo.bin_dir / "kwok"), f"--kubeconfig={lo.kubeconfig}", f"--config={STAGES_FILE}",
        "--manage-all-nodes=false", f"--manage-nodes-with-annotation-selector={key}={value}",
        f"--cidr={POD_CIDR}", f"--node-ip={NODE_IP}",
        # Leases are the controller-manager's liveness signal for nodes, as with kubelets.
        "--node-lease-duration-seconds=40",
        # kwok's server stands in for each node's kubelet endpoint (pod logs through the apiserver; see
        # harness.hostnode) and answers /healthz. Reachable on the host's address, since a node's
        # address must be one the apiserver proxies to; TLS because the apiserver speaks HTTPS to kubelets.
        f"--server-address=0.0.0.0:{lo.ports.kwok}", f"--node-port={lo.ports.kwok}",
        f"--tls-cert-file={lo.pki.serving_cert}", f"--tls-private-key-file={lo.pki.serving_key}",
        # Log sources come from kwok `Logs` objects (kwok.x-k8s.io), one per pod that has logs.
        "--enable-crds=Logs",
    ]  # fmt: skip
