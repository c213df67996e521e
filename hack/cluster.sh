#!/usr/bin/env bash
# Runs the cluster-test control plane by hand: `hack/cluster.sh up` starts etcd, kube-apiserver,
# kube-scheduler, kube-controller-manager and kwok (with the fake GPU/CPU nodes) in the foreground,
# prints `export KUBECONFIG=...`, and stops everything on Ctrl-C. Options: `hack/cluster.sh up --help`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3
PYTHONPATH="$root/tests${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m harness.devcluster "$@"
