"""`hack/cluster.sh up`: the test control plane in the foreground, for poking at it with kubectl.

Prints `export KUBECONFIG=...`, keeps running until Ctrl-C (or SIGTERM), then stops every process.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness import nodes
from harness.controlplane import ControlPlane
from harness.kubectl import apply_crds, bind
from harness.procs import ComponentFailedError, stop_on_signals, watch_until_interrupted

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_MANIFEST = REPO_ROOT / "manifests" / "crd.yaml"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hack/cluster.sh", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start etcd, kube-apiserver, scheduler, controller-manager and kwok")
    up.add_argument(
        "--dir", type=Path, help="working directory, kept on exit (default: a new temp dir, removed on exit)"
    )
    up.add_argument("--no-nodes", action="store_true", help="skip the default fake nodes")
    up.add_argument("--crd", action="store_true", help=f"apply {CRD_MANIFEST.relative_to(REPO_ROOT)} once up")
    return parser.parse_args(argv)


def up(args: argparse.Namespace) -> int:
    stop_on_signals()
    cp = ControlPlane(workdir=args.dir, default_nodes=not args.no_nodes)
    print("starting the local control plane ...", file=sys.stderr)
    try:
        cp.start()
    except ComponentFailedError as exc:
        print(f"start failed: {exc}", file=sys.stderr)
        return 1
    try:
        if args.crd:
            apply_crds(bind(cp.kubeconfig), CRD_MANIFEST)
        shapes = [] if args.no_nodes else nodes.DEFAULT_NODES
        print(f"up in {cp.timings['total']:.1f}s: {', '.join(cp.components)}", file=sys.stderr)
        for shape in shapes:
            gpus = f", {shape.gpus} x {nodes.GPU_RESOURCE}" if shape.gpus else ""
            print(f"  node {shape.name}: {shape.cpu} CPU, {shape.memory}{gpus}", file=sys.stderr)
        print(f"  logs in {cp.dir / 'logs'}; Ctrl-C stops everything", file=sys.stderr)
        print(f"export KUBECONFIG={cp.kubeconfig}", flush=True)
        return watch_until_interrupted(cp.components.values)
    finally:
        cp.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "up":
        return up(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
