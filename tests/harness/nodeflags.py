"""Configuration of the real test node (pure: paths, addresses and ports in; text, dicts and argv out).

Facts behind the settings: ../shared/design/real-node.md. harness.realnode writes these files and
starts the processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.nodepki import KeyPair

NODE_NAME = "node-0"
POD_SUBNET = "10.244.0.0/24"  # one node: one host-local range on the cni0 bridge
BRIDGE = "cni0"
DNS_SERVICE_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
KUBELET_PORT = 10250
CNI_BIN_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
PAUSE_IMAGE = "torchjob.local/pause:3.10"
# Machine-wide state of the one real node: fixed paths, since a second node cannot share the ports
# (10250, 53) and the bridge anyway, and `hack/node.sh down` must find them after a crash.
STATE_DIR = Path("/run/torchjob-node")
KUBELET_ROOT = Path("/var/lib/torchjob-node/kubelet")
POD_LOGS = Path("/var/lib/torchjob-node/pod-logs")  # not /var/log/pods: teardown removes all of it
# The kubelet also links every container log into this fixed legacy folder; teardown removes our links.
LEGACY_LOG_LINKS = Path("/var/log/containers")
CONTAINERD_SOCKET = STATE_DIR / "containerd.sock"


@dataclass(frozen=True)
class NodePorts:
    kubelet_healthz: int
    proxy_metrics: int
    proxy_healthz: int
    dns_health: int
    dns_ready: int


def override(argv: list[str], values: dict[str, str]) -> list[str]:
    """argv with each `--flag=value` replaced (or appended when absent). Slice-valued flags append on
    repetition, so a second `--authorization-mode` would be an error rather than a replacement."""
    out = []
    for arg in argv:
        key = arg.split("=", 1)[0]
        out.append(f"{key}={values[key]}" if key in values else arg)
    seen = {a.split("=", 1)[0] for a in argv}
    out += [f"{k}={v}" for k, v in values.items() if k not in seen]
    return out


def apiserver_for_node(argv: list[str], kubelet_client: KeyPair, ca_cert: Path, node_ip: str) -> list[str]:
    """The harness apiserver's flags for a real node: reachable on the node's IP (pods reach it through
    the `kubernetes` Service, whose endpoint the apiserver now reconciles itself), the Node authorizer
    and NodeRestriction for the kubelet's certificate identity, and a verified TLS client to kubelets."""
    return override(
        argv,
        {
            "--bind-address": node_ip,
            "--advertise-address": node_ip,
            "--endpoint-reconciler-type": "lease",
            "--authorization-mode": "Node,RBAC",
            "--enable-admission-plugins": "NodeRestriction",
            "--kubelet-client-certificate": str(kubelet_client.cert),
            "--kubelet-client-key": str(kubelet_client.key),
            "--kubelet-certificate-authority": str(ca_cert),
        },
    )


def containerd_config(root: Path, state: Path, socket: Path, cni_conf_dir: Path) -> str:
    """containerd 1.6 (config version 2) with the CRI plugin on the node's own socket and directories."""
    return f"""version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[debug]
  level = "info"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # This VM drops CAP_SYS_RESOURCE from the bounding set: runc cannot lower oom_score_adj, and without
  # this every sandbox fails with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{cni_conf_dir}"
"""


def cni_conflist(ipam_dir: Path) -> dict[str, Any]:
    """One bridge with host-local addresses. No masquerade: pods have no way off this machine."""
    return {
        "cniVersion": "1.0.0",
        "name": "torchjob",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(
    *, ca_cert: Path, serving: KeyPair, node_ip: str, ports: NodePorts, resolv_conf: Path
) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # cgroup v1 here; kubelet 1.35+ refuses it unless told otherwise. No systemd: cgroupfs.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
        "address": node_ip,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports.kubelet_healthz,
        "tlsCertFile": str(serving.cert),
        "tlsPrivateKeyFile": str(serving.key),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [DNS_SERVICE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        # An empty file: pods get the cluster DNS and nothing of the host's resolvers.
        "resolvConf": str(resolv_conf),
        # Imported images cannot be pulled again (no registry): never collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        # The disk is shared with builds and caches (the trainer image alone is ~6 GB): evict for real
        # shortage only, not at the default 10-15 % free, which would taint the only node.
        "evictionHard": {
            "memory.available": "200Mi",
            "nodefs.available": "2Gi",
            "imagefs.available": "2Gi",
            "nodefs.inodesFree": "1%",
        },
        "failSwapOn": False,
        "rotateCertificates": False,
        "serializeImagePulls": False,
        "nodeStatusUpdateFrequency": "5s",
        "containerLogMaxSize": "50Mi",
        "podLogsDir": str(POD_LOGS),
    }


def kube_proxy_config(*, kubeconfig: Path, ports: NodePorts) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": POD_SUBNET,
        "bindAddress": "127.0.0.1",
        "metricsBindAddress": f"127.0.0.1:{ports.proxy_metrics}",
        "healthzBindAddress": f"127.0.0.1:{ports.proxy_healthz}",
        # Leave the machine's conntrack sysctls alone.
        "conntrack": {"maxPerCore": 0, "min": 0},
        # route_localnet stays off: nothing here uses NodePorts on 127.0.0.1.
        "iptables": {"localhostNodePorts": False},
    }


def corefile(*, node_ip: str, kubeconfig: Path, ports: NodePorts) -> str:
    """CoreDNS on the node's IP only (port 53), the cluster zone only; no forwarding anywhere."""
    return f""".:53 {{
    bind {node_ip}
    errors
    health 127.0.0.1:{ports.dns_health}
    ready 127.0.0.1:{ports.dns_ready}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        ttl 5
    }}
    cache 5
}}
"""


def kubelet_argv(bin_dir: Path, *, config: Path, kubeconfig: Path, node_ip: str, cert_dir: Path) -> list[str]:
    return [
        str(bin_dir / "kubelet"), f"--config={config}", f"--kubeconfig={kubeconfig}",
        f"--hostname-override={NODE_NAME}", f"--node-ip={node_ip}", f"--root-dir={KUBELET_ROOT}",
        f"--cert-dir={cert_dir}", "--v=1",
    ]  # fmt: skip
