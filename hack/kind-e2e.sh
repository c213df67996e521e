#!/usr/bin/env bash
# End to end on kind, for anyone with Docker and kind (https://kind.sigs.k8s.io):
#   1. creates a kind cluster          2. builds both images and loads them into it
#   3. helm installs the chart          4-6. runs tests/e2e (pytest --kind): the same suite the node tier
#                                            runs on this machine's real node (docs/cluster-tests.md); the
#                                            Prometheus test skips (no Prometheus Operator on kind)
#   7. tears the cluster down (KEEP_CLUSTER=1 keeps it; the script prints how to reach it)
#
#   hack/kind-e2e.sh                     # images from a registry base (python:3.11-slim) and PyPI
#   hack/kind-e2e.sh --local-base        # arguments go to hack/build-images.sh (offline builds)
#
# Environment: KIND_CLUSTER (torchjob-e2e), KIND_NODE_IMAGE (kind's default), TAG (pyproject version),
# HELM / KUBECTL / KIND (binaries; helm defaults to hack/tools.sh's pinned one), KEEP_CLUSTER (0).
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${KIND_CLUSTER:-torchjob-e2e}
TAG=${TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n1)}
KIND=${KIND:-kind}
KUBECTL=${KUBECTL:-$( [ -x .venv/bin/kubectl ] && echo .venv/bin/kubectl || echo kubectl )}
PYTEST=${PYTEST:-$( [ -x .venv/bin/pytest ] && echo .venv/bin/pytest || echo pytest )}
NAMESPACE=torchjob-system
KUBECONFIG_FILE=$(mktemp "${TMPDIR:-/tmp}/torchjob-kind-XXXXXX.kubeconfig")
export KUBECONFIG=$KUBECONFIG_FILE
step() { printf '\n=== [kind-e2e] %s\n' "$*" >&2; }
die() { echo "[kind-e2e] $*" >&2; exit 1; }

for tool in docker "$KIND" "$KUBECTL"; do
  command -v "$tool" >/dev/null || die "$tool not found (needs Docker, kind and kubectl; run hack/setup.sh for kubectl)"
done
if [ -z "${HELM:-}" ]; then
  HELM=$(hack/tools.sh | sed -n 's/^helm=//p')
fi
docker info >/dev/null 2>&1 || die "the Docker engine does not answer 'docker info'"

teardown() {
  local rc=$?
  if [ "${KEEP_CLUSTER:-0}" = 1 ]; then
    step "keeping cluster $CLUSTER: export KUBECONFIG=$KUBECONFIG_FILE; $KIND delete cluster --name $CLUSTER when done"
  else
    step "7. tearing down cluster $CLUSTER"
    "$KIND" delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
    rm -f "$KUBECONFIG_FILE"
  fi
  exit "$rc"
}

step "1. creating kind cluster $CLUSTER"
if "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  "$KIND" export kubeconfig --name "$CLUSTER" --kubeconfig "$KUBECONFIG_FILE"
else
  "$KIND" create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG_FILE" --wait 180s \
    ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"}
fi
trap teardown EXIT

step "2. building images (tag $TAG) and loading them into kind"
mapfile -t images < <(TAG=$TAG hack/build-images.sh "$@")
[ "${#images[@]}" -eq 2 ] || die "hack/build-images.sh built ${images[*]:-nothing}"
"$KIND" load docker-image --name "$CLUSTER" "${images[@]}"

step "3. helm install torchjob into $NAMESPACE (restricted Pod Security, as on the real node tier)"
"$KUBECTL" create namespace "$NAMESPACE" --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
"$KUBECTL" label --overwrite namespace "$NAMESPACE" pod-security.kubernetes.io/enforce=restricted \
  pod-security.kubernetes.io/warn=restricted >/dev/null
"$HELM" upgrade --install torchjob charts/torchjob --namespace "$NAMESPACE" \
  --set image.tag="$TAG" --set image.pullPolicy=Never --wait --timeout 5m
"$KUBECTL" -n "$NAMESPACE" get pods -o wide

step "4-6. tests/e2e on this cluster: the example to Succeeded, rank metrics, logs, disruptions, failures"
TORCHJOB_E2E_OPERATOR_NAMESPACE=$NAMESPACE KUBECTL=$KUBECTL \
  "$PYTEST" tests/e2e --kind -s -v
step "passed"
