"""The control plane plus one real node plus both project images: what the node tier (tests/e2e without
--kind) and `hack/node.sh up` run.

    with NodeCluster() as nc:                  # host IP, control plane, node, images imported
        install_chart(nc, helm)                # charts/torchjob into a restricted namespace
        kubectl --kubeconfig nc.kubeconfig ...

`hack/node.sh down` (`python -m harness.nodecluster down`) removes whatever a crashed run left.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from harness import hostnode, nodeflags, realnode
from harness.controlplane import ControlPlane
from harness.procs import ComponentFailedError, stop_on_signals, watch_until_interrupted

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGES_SCRIPT = REPO_ROOT / "hack" / "images.sh"
CHART = REPO_ROOT / "charts" / "torchjob"
OPERATOR_NAMESPACE = "torchjob-system"
RELEASE = "torchjob"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
}


@dataclass(frozen=True)
class Image:
    name: str  # operator | trainer
    tarball: Path
    tag: str  # h<content hash>: unique per content, so IfNotPresent never runs stale code


def build_images() -> list[Image]:
    """hack/images.sh: cached docker-save tarballs, built on a content-hash miss (minutes cold)."""
    proc = subprocess.run(["bash", str(IMAGES_SCRIPT)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"hack/images.sh failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    sys.stderr.write(proc.stderr)
    images = []
    for line in proc.stdout.split():
        name, tarball = line.split("=", 1)
        match = re.fullmatch(rf"torchjob-{name}-([0-9a-f]+)\.tar", Path(tarball).name)
        assert match, f"unexpected tarball name {tarball}"
        images.append(Image(name, Path(tarball), f"h{match.group(1)}"))
    return images


class NodeCluster:
    def __init__(self, *, workdir: Path | None = None, images: bool = True) -> None:
        ip = hostnode.host_ip()
        if ip is None:
            raise realnode.NodeUnavailableError("no routed IPv4 address on this machine for the node")
        self.node_ip = ip
        self.cp = ControlPlane(workdir=workdir, default_nodes=False, node_ip=ip)
        self.node = realnode.RealNode(self.cp, ip)
        self.with_images = images
        self.images: dict[str, Image] = {}
        self.timings: dict[str, float] = {}

    @property
    def kubeconfig(self) -> Path:
        return self.cp.kubeconfig

    def start(self) -> Self:
        realnode.preflight()
        t0 = time.monotonic()
        # Images first: a cold build takes minutes and needs no cluster running meanwhile.
        if self.with_images:
            self.images = {i.name: i for i in build_images()}
        self.timings["images"] = time.monotonic() - t0
        try:
            self.cp.start()
            self.timings["control plane"] = time.monotonic() - t0
            self.node.start()
            self.timings["node"] = time.monotonic() - t0
            self.node.import_images(i.tarball for i in self.images.values())
            self.timings["import"] = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        try:
            self.node.stop()
        finally:
            self.cp.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def install_chart(nc: NodeCluster, helm: str, *, extra: tuple[str, ...] = (), timeout_s: int = 300) -> None:
    """charts/torchjob (both operator replicas, peered) into a namespace that enforces the restricted
    Pod Security Standard, with the images this run imported."""
    from harness.kubectl import bind

    kubectl = bind(nc.kubeconfig)
    kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
    kubectl(
        "label", "--overwrite", "namespace", OPERATOR_NAMESPACE, *(f"{k}={v}" for k, v in RESTRICTED.items())
    )
    tag = nc.images["operator"].tag
    argv = [helm, "upgrade", "--install", RELEASE, str(CHART), "--kubeconfig", str(nc.kubeconfig),
            "--namespace", OPERATOR_NAMESPACE, "--set", f"image.tag={tag}",
            "--set", "image.pullPolicy=IfNotPresent", *extra,
            "--wait", "--timeout", f"{timeout_s}s"]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout_s + 60)
    if proc.returncode != 0:
        pods = kubectl("get", "pods", "-n", OPERATOR_NAMESPACE, "-o", "wide", check=False).stdout
        events = kubectl("get", "events", "-n", OPERATOR_NAMESPACE, check=False).stdout
        raise RuntimeError(
            f"helm install failed: {proc.stderr.strip()}\npods:\n{pods}\nevents:\n{events[-3000:]}"
        )


# -- hack/node.sh ------------------------------------------------------------------------------------------


def up(args: argparse.Namespace) -> int:
    stop_on_signals()
    try:
        nc = NodeCluster(workdir=args.dir, images=not args.no_images)
        print("starting control plane, real node and images ...", file=sys.stderr)
        nc.start()
    except (ComponentFailedError, realnode.NodeUnavailableError, RuntimeError) as exc:
        print(f"start failed: {exc}", file=sys.stderr)
        return 1
    try:
        if args.chart:
            from harness.tools import find_helm

            helm = find_helm()
            if helm is None:
                print("no helm: run hack/tools.sh", file=sys.stderr)
                return 1
            install_chart(nc, helm)
        print(f"up: {', '.join(f'{k} {v:.0f}s' for k, v in nc.timings.items())}", file=sys.stderr)
        for image in nc.images.values():
            print(f"  image torchjob-{image.name}:{image.tag} (also :<version>)", file=sys.stderr)
        print(f"  node {nodeflags.NODE_NAME} at {nc.node_ip}; logs in {nc.cp.dir / 'logs'} and "
              f"{nc.node.dir / 'logs'}; Ctrl-C stops and cleans up everything", file=sys.stderr)  # fmt: skip
        print(f"export KUBECONFIG={nc.kubeconfig}", flush=True)
        return watch_until_interrupted(lambda: [*nc.cp.components.values(), *nc.node.components.values()])
    finally:
        nc.stop()


def down() -> int:
    # Containers through a still-running containerd first, then everything found on the machine.
    done = realnode.cleanup(containerd_alive=True) + realnode.cleanup()
    print("\n".join(done) if done else "nothing to clean up", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/node.sh", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="control plane + real node + images, in the foreground")
    p_up.add_argument("--dir", type=Path, help="working directory, kept (default: a temp dir, removed)")
    p_up.add_argument("--no-images", action="store_true", help="skip building/importing the project images")
    p_up.add_argument("--chart", action="store_true", help="also helm install charts/torchjob")
    sub.add_parser("down", help="remove everything a node left on this machine (after a crash, say)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        print("hack/node.sh needs root", file=sys.stderr)
        return 1
    return up(args) if args.command == "up" else down()


if __name__ == "__main__":
    sys.exit(main())
