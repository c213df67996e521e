#!/usr/bin/env bash
# Builds the real node's binaries into a cache outside the repo, keyed by version, and reuses them:
#   kubelet, kube-proxy   from the pinned k8s.io/kubernetes module (hack/nodebins: the same version and
#                         staging replaces as hack/k8sbins, so node and control plane match)
#   coredns               from the Go module proxy with only the plugins the node needs (hack/coredns)
#   pause                 the sandbox process (hack/nodebins/pause), static
# containerd, runc and the CNI plugins come from Debian (hack/node.sh checks them). Prints the directory
# on the last line. Override it with NODEBIN_DIR.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
K8S_VERSION=${K8S_VERSION:-v1.36.3}
COREDNS_VERSION=$(sed -n 's#^require github.com/coredns/coredns \(v[0-9.]*\)$#\1#p' "$here/coredns/go.mod")
k8s_pinned=$(sed -n 's#^require k8s.io/kubernetes \(v[0-9.]*\)$#\1#p' "$here/nodebins/go.mod")
[ "$k8s_pinned" = "$K8S_VERSION" ] || { echo "[nodebins] hack/nodebins/go.mod pins $k8s_pinned, not $K8S_VERSION" >&2; exit 1; }
BIN=${NODEBIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/torchjob/nodebin/${K8S_VERSION}-coredns-${COREDNS_VERSION}}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-trimpath
log() { printf '[nodebins] %s\n' "$*" >&2; }
ALL="kubelet kube-proxy coredns pause"

missing() {
  for b in $ALL; do [ -x "$BIN/$b" ] || return 0; done
  return 1
}
if missing; then
  # One build at a time per machine; a waiting caller reuses the result.
  mkdir -p "$(dirname "$BIN")"
  exec 9>"$BIN.lock"
  if ! flock -n 9; then log "another build holds $BIN.lock; waiting for it"; flock 9; fi
fi
if missing; then
  start=$(date +%s)
  mkdir -p "$BIN.tmp"
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  kv="-X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1"
  kv="$kv -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
  (
    cd "$here/nodebins"
    go mod download
    for cmd in kubelet kube-proxy; do
      if [ ! -x "$BIN.tmp/$cmd" ]; then
        log "building $cmd $K8S_VERSION ($(( $(date +%s) - start ))s elapsed)"
        go build -pgo=off -ldflags "-s -w $kv" -o "$BIN.tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd"
      fi
    done
    [ -x "$BIN.tmp/pause" ] || go build -ldflags "-s -w" -o "$BIN.tmp/pause" ./pause
  )
  if [ ! -x "$BIN.tmp/coredns" ]; then
    log "building coredns $COREDNS_VERSION ($(( $(date +%s) - start ))s elapsed)"
    (cd "$here/coredns" && go mod download && go build -ldflags "-s -w" -o "$BIN.tmp/coredns" .)
  fi
  rm -rf "$BIN"; mv "$BIN.tmp" "$BIN"
  log "built in $(( $(date +%s) - start ))s into $BIN"
fi
"$BIN/kubelet" --version >&2
echo "$BIN"
