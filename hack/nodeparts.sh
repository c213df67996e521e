#!/usr/bin/env bash
# The real-node tier's parts, each cached by version or content hash: Debian packages, kubelet/kube-proxy/
# CoreDNS/pause, the Prometheus Operator with its Prometheus, and both images. The tier needs root (a kubelet,
# containerd, iptables); elsewhere this says so and the tier's tests skip with that reason
# (TORCHJOB_REQUIRE_NODE=1, as in CI, makes the skip a failure).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "[nodeparts] not root: the real-node tier (tests/e2e, marker node) will skip" >&2
  exit 0
fi
hack/nodedeps.sh
hack/nodebins.sh >/dev/null
hack/promoperator.sh >/dev/null
hack/images.sh >/dev/null
