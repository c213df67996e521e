"""One real Kubernetes node beside the harness control plane: containerd, kubelet, kube-proxy, CoreDNS
(the `kube-dns` Service) and a bridge CNI, all on this machine.

    with ControlPlane(node_ip=ip, default_nodes=False) as cp, RealNode(cp, ip) as node:
        node.import_images([tarball])      # docker-save tarballs into containerd's k8s.io namespace

Pods run for real (runc, cgroup v1), reach the apiserver through the `kubernetes` Service with their
in-cluster config (kube-proxy, iptables mode), resolve Service names through CoreDNS, and have
addresses on the `cni0` bridge. The kubelet authenticates with certificates from the control plane's CA
(harness.nodepki). Binaries: hack/nodebins.sh (kubelet, kube-proxy, coredns, pause) and Debian
(containerd, runc, CNI plugins, iptables).

Only one such node can run per machine (ports 10250 and 53, the bridge, fixed state paths). `cleanup()`
removes everything a node leaves behind (processes, containers, mounts, links, iptables chains, the
ip_forward setting) from what it finds on the machine, so it also repairs a crashed or failed start;
`start()` runs it first. docs/cluster-tests.md describes the tier.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import yaml
from kubernetes import client

from harness import kubeconfig, nodeflags, nodepki
from harness.nodeflags import (
    CONTAINERD_SOCKET,
    KUBELET_ROOT,
    LEGACY_LOG_LINKS,
    NODE_NAME,
    POD_LOGS,
    STATE_DIR,
)
from harness.polling import eventually
from harness.ports import free_ports
from harness.procs import Component, Supervisor, kill_tree

if TYPE_CHECKING:
    from harness.controlplane import ControlPlane

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "nodebins.sh"
NODE_BINARIES = ("kubelet", "kube-proxy", "coredns", "pause")
DEBIAN_BINARIES = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "ip6tables", "ip")
STATE_FILE = STATE_DIR / "state.json"
# Chains the node's parts create: kube-proxy and the kubelet (KUBE-*), CNI plugins (CNI-*), ours.
CHAIN_PREFIXES = ("KUBE-", "CNI-", "TORCHJOB-")
EGRESS_CHAIN = "TORCHJOB-NODE-EGRESS"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def wait_for(check: Callable[[], bool], component: Component, what: str, timeout_s: float) -> None:
    """Polls `check`; fails at once with the component's log if it exits, or after `timeout_s`."""
    eventually(check, timeout_s, what, 0.2, watch=component)


class NodeUnavailableError(RuntimeError):
    """This machine cannot run the real node (not root, a package or binary missing, no IPv4 address)."""


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "torchjob"


def containerd_root() -> Path:
    """containerd's content store outlives the node, so imported images are imported once per content."""
    return Path(os.environ.get("TORCHJOB_CONTAINERD_ROOT", cache_root() / "node" / "containerd"))


def locate_binaries() -> Path:
    """The directory hack/nodebins.sh prints (building once, a few minutes cold)."""
    env_dir = os.environ.get("NODEBIN_DIR")
    if env_dir and all(os.access(Path(env_dir) / b, os.X_OK) for b in NODE_BINARIES):
        return Path(env_dir)
    if shutil.which("go") is None:
        raise NodeUnavailableError(
            "node binaries are not built and `go` is not on PATH: run hack/nodebins.sh"
        )
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise NodeUnavailableError(
            f"hack/nodebins.sh failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    return Path(proc.stdout.strip().splitlines()[-1])


def preflight() -> None:
    """Raises NodeUnavailableError naming what this machine lacks."""
    if os.geteuid() != 0:
        raise NodeUnavailableError("the real node needs root (containerd, kubelet, iptables)")
    missing = [b for b in DEBIAN_BINARIES if shutil.which(b) is None]
    missing += [str(p) for p in (nodeflags.CNI_BIN_DIR / "bridge", nodeflags.CNI_BIN_DIR / "host-local",
                                 nodeflags.CNI_BIN_DIR / "portmap", nodeflags.CNI_BIN_DIR / "loopback")
                if not p.exists()]  # fmt: skip
    if missing:
        raise NodeUnavailableError(
            f"missing {', '.join(missing)}: apt-get install containerd runc containernetworking-plugins "
            "iptables conntrack"
        )


# -- the pause image -------------------------------------------------------------------------------------


def single_layer_image(tag: str, files: dict[str, Path], config: dict[str, Any]) -> bytes:
    """A docker-save archive of a one-layer image holding `files` (path in the image -> file here,
    symlinks followed), as `ctr images import` reads it. For the few images no registry serves here."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        for arcname, source in sorted(files.items()):
            info = tar.gettarinfo(str(source.resolve()), arcname=arcname)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            with source.resolve().open("rb") as f:
                tar.addfile(info, f)
    layer_bytes = layer.getvalue()
    diff_id = hashlib.sha256(layer_bytes).hexdigest()
    image_config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
    }).encode()  # fmt: skip
    config_name = f"{hashlib.sha256(image_config).hexdigest()}.json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag],
                            "Layers": [f"{diff_id}/layer.tar"]}]).encode()  # fmt: skip
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in ((f"{diff_id}/layer.tar", layer_bytes), (config_name, image_config),
                           ("manifest.json", manifest)):  # fmt: skip
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return out.getvalue()


def pause_image_tar(pause_binary: Path) -> bytes:
    return single_layer_image(
        nodeflags.PAUSE_IMAGE, {"pause": pause_binary}, {"Entrypoint": ["/pause"], "User": "65535:65535"}
    )


# -- the node ----------------------------------------------------------------------------------------------


class RealNode:
    """Starts on `start()` (or `with`), stops and cleans up everything on `stop()`; safe to stop twice."""

    def __init__(
        self, cp: ControlPlane, node_ip: str, *, bin_dir: Path | None = None, startup_timeout_s: float = 120
    ) -> None:
        self.cp = cp
        self.node_ip = node_ip
        self.bin_dir = bin_dir
        self.startup_timeout_s = startup_timeout_s
        self.dir = cp.dir / "node"
        self.timings: dict[str, float] = {}
        self._supervisor: Supervisor | None = None

    @property
    def components(self) -> dict[str, Component]:
        return {c.name: c for c in self._supervisor.components} if self._supervisor else {}

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> Self:
        preflight()
        bin_dir = self.bin_dir = self.bin_dir or locate_binaries()
        cleanup()  # a crashed earlier run must not leave its bridge, rules or containers in our way
        started = time.monotonic()
        try:
            self._start(bin_dir)
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - started
        return self

    def stop(self) -> None:
        # Processes first (kubelet would restart what we remove), then what they leave on the machine.
        if self._supervisor is not None:
            for name in ("kubelet", "kube-proxy", "coredns"):
                if name in self.components:
                    self._supervisor.stop(self.components[name])
            self._supervisor.components = [c for c in self._supervisor.components if c.name == "containerd"]
        cleanup(containerd_alive=self._supervisor is not None and "containerd" in self.components)
        if self._supervisor is not None:
            self._supervisor.stop_all()
            self._supervisor = None
        cleanup()  # containerd gone: mounts, links and rules left by anything it did not undo

    # -- start-up --------------------------------------------------------------------------------------

    def _start(self, bin_dir: Path) -> None:
        t0 = time.monotonic()
        keys = self.cp._pki  # the harness CA signs every node credential
        assert keys is not None, "control plane not started"
        for d in (self.dir, STATE_DIR, KUBELET_ROOT, containerd_root()):
            d.mkdir(parents=True, exist_ok=True)
        _record_state()
        logs = self.dir / "logs"
        logs.mkdir(exist_ok=True)
        ports = nodeflags.NodePorts(*free_ports(5))
        self._egress_rule()

        cni_dir = self.dir / "cni"
        cni_dir.mkdir(exist_ok=True)
        (cni_dir / "10-torchjob.conflist").write_text(json.dumps(nodeflags.cni_conflist(STATE_DIR / "ipam")))
        config = self.dir / "containerd.toml"
        config.write_text(nodeflags.containerd_config(containerd_root(), STATE_DIR / "containerd",
                                                      CONTAINERD_SOCKET, cni_dir))  # fmt: skip
        sup = self._supervisor = Supervisor(logs)
        budget = self.startup_timeout_s
        containerd = sup.start("containerd", ["containerd", f"--config={config}"])
        wait_for(functools.partial(_ctr_ok), containerd, f"serving on {CONTAINERD_SOCKET}", budget)
        self.import_image_bytes(pause_image_tar(bin_dir / "pause"))
        self.timings["containerd"] = time.monotonic() - t0

        ca = keys.ca_cert
        ca_pem = ca.read_bytes()
        kubelet_kc = self._cert_kubeconfig("kubelet", nodepki.kubelet_client(keys, NODE_NAME), ca_pem)
        proxy_kc = self._cert_kubeconfig("kube-proxy", nodepki.kube_proxy_client(keys), ca_pem)
        dns_kc = self._cert_kubeconfig("coredns", nodepki.coredns_client(keys), ca_pem)
        serving = nodepki.kubelet_serving(keys, NODE_NAME, self.node_ip)
        resolv = self.dir / "resolv.conf"
        resolv.write_text("")
        kubelet_cfg = self.dir / "kubelet.yaml"
        kubelet_cfg.write_text(yaml.safe_dump(nodeflags.kubelet_config(
            ca_cert=ca, serving=serving, node_ip=self.node_ip, ports=ports, resolv_conf=resolv)))  # fmt: skip
        kubelet = sup.start("kubelet", nodeflags.kubelet_argv(
            bin_dir, config=kubelet_cfg, kubeconfig=kubelet_kc, node_ip=self.node_ip,
            cert_dir=self.dir / "kubelet-pki"))  # fmt: skip
        proxy_cfg = self.dir / "kube-proxy.yaml"
        proxy_cfg.write_text(yaml.safe_dump(nodeflags.kube_proxy_config(kubeconfig=proxy_kc, ports=ports)))
        proxy = sup.start("kube-proxy", [str(bin_dir / "kube-proxy"), f"--config={proxy_cfg}"])

        with self.cp.api_client() as api:
            _install_dns_objects(api, self.node_ip)
        corefile = self.dir / "Corefile"
        corefile.write_text(nodeflags.corefile(node_ip=self.node_ip, kubeconfig=dns_kc, ports=ports))
        dns = sup.start("coredns", [str(bin_dir / "coredns"), "-conf", str(corefile)])

        wait_for(functools.partial(_http_ok, f"http://127.0.0.1:{ports.kubelet_healthz}/healthz"),
                   kubelet, "healthy (/healthz)", budget)  # fmt: skip
        wait_for(functools.partial(_http_ok, f"http://127.0.0.1:{ports.proxy_healthz}/healthz"),
                   proxy, "healthy (/healthz)", budget)  # fmt: skip
        wait_for(functools.partial(_http_ok, f"http://127.0.0.1:{ports.dns_ready}/ready"),
                   dns, "ready (/ready)", budget)  # fmt: skip
        with self.cp.api_client() as api:
            wait_for(
                functools.partial(_node_ready, api), kubelet, f"registering Node {NODE_NAME} Ready", budget
            )
        self.timings["node"] = time.monotonic() - t0

    def _cert_kubeconfig(self, name: str, pair: nodepki.KeyPair, ca_pem: bytes) -> Path:
        doc = kubeconfig.token_kubeconfig(self.cp.server, ca_pem, name, "")
        doc["users"] = [{"name": name, "user": {"client-certificate": str(pair.cert),
                                                "client-key": str(pair.key)}}]  # fmt: skip
        return kubeconfig.write(self.dir / f"{name}.kubeconfig", doc)

    def _egress_rule(self) -> None:
        # Pods may talk to each other and to this machine, never beyond it (the bridge plugin turns on
        # ip_forward, and nothing masquerades, but a packet would still leave).
        _iptables("-N", EGRESS_CHAIN)
        _iptables("-A", EGRESS_CHAIN, "-i", nodeflags.BRIDGE, "!", "-o", nodeflags.BRIDGE, "-j", "DROP")
        _iptables("-I", "FORWARD", "1", "-j", EGRESS_CHAIN)

    # -- images ----------------------------------------------------------------------------------------

    def import_image_bytes(self, archive: bytes) -> None:
        _ctr("images", "import", "--no-unpack=false", "-", input=archive)

    def import_images(self, tarballs: Iterable[Path]) -> None:
        """Imports docker-save archives unless containerd already holds every tag they carry."""
        for tarball in tarballs:
            tags = _archive_tags(tarball)
            if tags and all(has_image(t) for t in tags):
                continue
            with tarball.open("rb") as f:
                proc = subprocess.run(
                    ["ctr", f"--address={CONTAINERD_SOCKET}", "-n", "k8s.io", "images", "import", "-"],
                    stdin=f,
                    capture_output=True,
                    text=True,
                    check=False,
                )
            if proc.returncode != 0:
                raise RuntimeError(f"ctr images import {tarball} failed: {proc.stderr.strip()}")
            self._forget_older(tags)

    def _forget_older(self, tags: list[str]) -> None:
        """Untags earlier content-hash builds of the same images (`:h<hash>` tags), so containerd's garbage
        collector frees their layers: each trainer build is several GB."""
        keep = set(tags)
        repos = {t.rsplit(":", 1)[0] for t in tags if t.rsplit(":", 1)[1].startswith("h")}
        listed = _ctr("images", "ls", "-q", check=False).stdout.decode().split()
        stale = [i for i in listed if i not in keep and i.rsplit(":", 1)[0] in repos
                 and i.rsplit(":", 1)[1].startswith("h")]  # fmt: skip
        if stale:
            _ctr("images", "rm", *stale, check=False)


def _archive_tags(tarball: Path) -> list[str]:
    with tarfile.open(tarball) as tar:
        member = tar.extractfile("manifest.json")
        if member is None:
            return []
        return [normalize(t) for entry in json.load(member) for t in entry.get("RepoTags") or []]


def normalize(image: str) -> str:
    """The name containerd stores for a docker-style reference: `docker.io/library/` for bare names."""
    first = image.split("/", 1)[0]
    if "/" not in image:
        return f"docker.io/library/{image}"
    if "." in first or ":" in first or first == "localhost":
        return image
    return f"docker.io/{image}"


def has_image(ref: str) -> bool:
    proc = subprocess.run(
        ["ctr", f"--address={CONTAINERD_SOCKET}", "-n", "k8s.io", "images", "ls", "-q", f"name=={ref}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return proc.returncode == 0 and ref in proc.stdout.split()


# -- API objects -----------------------------------------------------------------------------------------


def _install_dns_objects(api: client.ApiClient, node_ip: str) -> None:
    """The `kube-dns` Service (no selector: CoreDNS runs on the host) with an EndpointSlice to it, and
    the read-only ClusterRole CoreDNS's certificate user needs."""
    core: Any = client.CoreV1Api(api)
    rbac: Any = client.RbacAuthorizationV1Api(api)
    discovery: Any = client.DiscoveryV1Api(api)
    user = "system:torchjob:coredns"
    _create_or_keep(rbac.create_cluster_role, {
        "metadata": {"name": "torchjob:coredns"},
        "rules": [
            {"apiGroups": [""], "resources": ["services", "pods", "namespaces"], "verbs": ["list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        ],
    })  # fmt: skip
    _create_or_keep(rbac.create_cluster_role_binding, {
        "metadata": {"name": "torchjob:coredns"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "torchjob:coredns"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    })  # fmt: skip
    ports = [
        {"name": "dns", "port": 53, "protocol": "UDP"},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
    ]
    _create_or_keep(functools.partial(core.create_namespaced_service, "kube-system"), {
        "metadata": {"name": "kube-dns", "labels": {"k8s-app": "kube-dns"}},
        "spec": {"clusterIP": nodeflags.DNS_SERVICE_IP, "ports": ports},
    })  # fmt: skip
    _create_or_keep(functools.partial(discovery.create_namespaced_endpoint_slice, "kube-system"), {
        "metadata": {"name": "kube-dns-host", "labels": {
            "kubernetes.io/service-name": "kube-dns",
            "endpointslice.kubernetes.io/managed-by": "torchjob-node",
        }},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [node_ip], "conditions": {"ready": True}}],
        "ports": ports,
    })  # fmt: skip


def _create_or_keep(create: Any, body: dict[str, Any]) -> None:
    try:
        create(body)
    except client.ApiException as exc:
        if exc.status != 409:
            raise


def _node_ready(api: client.ApiClient) -> bool:
    core: Any = client.CoreV1Api(api)
    try:
        node = core.read_node(NODE_NAME)
    except client.ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


# -- machine state and cleanup -----------------------------------------------------------------------------


def _record_state() -> None:
    # The ip_forward value before the bridge plugin turns it on, once: a second start must not record
    # the value the first one left.
    if not STATE_FILE.exists():
        STATE_FILE.write_text(json.dumps({"ip_forward": IP_FORWARD.read_text().strip()}))


def _ctr(*args: str, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(
        ["ctr", f"--address={CONTAINERD_SOCKET}", "-n", "k8s.io", *args],
        input=input, capture_output=True, check=False, timeout=600,
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise RuntimeError(f"ctr {' '.join(args)} failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc


def _ctr_ok() -> bool:
    return CONTAINERD_SOCKET.exists() and _ctr("version", check=False).returncode == 0


def _iptables(*args: str, binary: str = "iptables") -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary, "-w", "5", *args], capture_output=True, text=True, check=False)


def _mounts_under(*roots: Path) -> list[str]:
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == str(r) or point.startswith(f"{r}/") for r in roots):
            found.append(point)
    return sorted(found, key=len, reverse=True)  # deepest first


def _our_shims() -> list[int]:
    """containerd-shim processes started for our socket (a shim daemonizes out of containerd's group)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and str(CONTAINERD_SOCKET).encode() in argv:
            pids.append(int(cmdline.parent.name))
    return pids


def _strip_rules(save: str) -> str:
    """iptables-save text without our chains and without any rule that jumps to them."""
    out = []
    for line in save.splitlines():
        words = line.split()
        if line.startswith(":") and line[1:].startswith(CHAIN_PREFIXES):
            continue
        if line.startswith("-A ") and (
            words[1].startswith(CHAIN_PREFIXES)
            or any(
                w in ("-j", "-g") and i + 1 < len(words) and words[i + 1].startswith(CHAIN_PREFIXES)
                for i, w in enumerate(words)
            )
        ):
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def cleanup(*, containerd_alive: bool = False) -> list[str]:
    """Removes what a node leaves on this machine; idempotent, every step guarded. Returns what it did.

    With `containerd_alive`, first stops and removes every container through containerd (the CRI
    sandboxes' network namespaces go with them). Safe when nothing is there.
    """
    done: list[str] = []
    if containerd_alive and _ctr_ok():
        done += _remove_containers()
    for pid in _our_shims():  # containers whose containerd is gone: their shims still run them
        kill_tree(pid)
        done.append(f"killed shim {pid} and its containers")
    done += _unmount_all()
    done += _delete_bridge()
    done += _strip_iptables()
    if STATE_FILE.exists():
        with contextlib.suppress(OSError, ValueError, KeyError):
            IP_FORWARD.write_text(json.loads(STATE_FILE.read_text())["ip_forward"] + "\n")
            done.append("restored ip_forward")
    _remove_log_links()
    # Only with nothing mounted below: a volume still mounted there (a local PV) would be emptied.
    if not containerd_alive and not _containerd_running():
        _remove_node_dirs()
    return done


def _remove_containers() -> list[str]:
    tasks = _ctr("tasks", "ls", "-q", check=False).stdout.decode().split()
    for task in tasks:
        _ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)
    for task in tasks:
        for _ in range(50):
            if _ctr("tasks", "delete", task, check=False).returncode == 0:
                break
            time.sleep(0.1)
    containers = _ctr("containers", "ls", "-q", check=False).stdout.decode().split()
    for container in containers:
        _ctr("containers", "rm", container, check=False)
    return [f"removed {len(tasks)} tasks, {len(containers)} containers"] if tasks or containers else []


def _unmount_all() -> list[str]:
    """Network namespaces of CRI sandboxes (/run/netns/cni-*; this machine runs no other CRI runtime),
    then everything mounted under the node's own directories."""
    done = []
    netns = [m for m in _mounts_under(Path("/run/netns"), Path("/var/run/netns")) if "/cni-" in m]
    for point in [*netns, *_mounts_under(KUBELET_ROOT, STATE_DIR, containerd_root())]:
        if subprocess.run(["umount", "-l", point], capture_output=True, check=False).returncode == 0:
            done.append(f"unmounted {point}")
    for ns in netns:
        with contextlib.suppress(OSError):
            os.unlink(ns)
    return done


def _delete_bridge() -> list[str]:
    shown = subprocess.run(["ip", "link", "show", nodeflags.BRIDGE], capture_output=True, check=False)
    if shown.returncode != 0:
        return []
    subprocess.run(["ip", "link", "delete", nodeflags.BRIDGE], capture_output=True, check=False)
    return [f"deleted link {nodeflags.BRIDGE}"]


def _strip_iptables() -> list[str]:
    done = []
    for save, restore in (("iptables-save", "iptables-restore"), ("ip6tables-save", "ip6tables-restore")):
        if shutil.which(save) is None:
            continue
        before = subprocess.run([save], capture_output=True, text=True, check=False).stdout
        after = _strip_rules(before)
        if after.split("\n") != before.split("\n") and before.strip():
            proc = subprocess.run(
                [restore, "-w", "5"], input=after, capture_output=True, text=True, check=False
            )
            done.append(f"{restore}: removed {len(before.splitlines()) - len(after.splitlines())} lines"
                        + (f" (failed: {proc.stderr.strip()})" if proc.returncode else ""))  # fmt: skip
    return done


def _remove_log_links() -> None:
    for link in LEGACY_LOG_LINKS.glob("*.log") if LEGACY_LOG_LINKS.is_dir() else []:
        with contextlib.suppress(OSError):
            if link.is_symlink() and os.readlink(link).startswith(f"{POD_LOGS}/"):
                link.unlink()


def _remove_node_dirs() -> None:
    shutil.rmtree(POD_LOGS, ignore_errors=True)
    for directory in (STATE_DIR, KUBELET_ROOT):
        if not _mounts_under(directory):
            shutil.rmtree(directory, ignore_errors=True)
    with contextlib.suppress(OSError):  # /var/lib/torchjob-node, once empty
        KUBELET_ROOT.parent.rmdir()


def _containerd_running() -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(1)
            s.connect(str(CONTAINERD_SOCKET))
    except OSError:
        return False
    return True
