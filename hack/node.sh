#!/usr/bin/env bash
# A real Kubernetes node by hand: `hack/node.sh up` starts the test control plane (etcd, kube-apiserver,
# scheduler, controller-manager) plus containerd, kubelet, kube-proxy, CoreDNS and a bridge CNI on this
# machine, imports both project images, prints `export KUBECONFIG=...`, and on Ctrl-C stops and cleans up
# everything. `hack/node.sh up --chart` also installs charts/torchjob. `hack/node.sh down` removes what a
# crashed run left (processes, containers, mounts, cni0, iptables chains). Needs root and the Debian
# packages in docs/cluster-tests.md. Options: `hack/node.sh up --help`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3
PYTHONPATH="$root/tests${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m harness.nodecluster "$@"
