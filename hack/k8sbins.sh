#!/usr/bin/env bash
# Builds the real control-plane binaries (kube-apiserver, kube-controller-manager,
# kube-scheduler, etcd, kwok) from the Go module proxy into a cache outside the repo,
# keyed by version, and reuses them afterwards. Prints the directory on the last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
K8S_VERSION=${K8S_VERSION:-v1.36.3}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
BIN=${K8SBIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/torchjob/k8sbin/${K8S_VERSION}-kwok-${KWOK_VERSION}}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-trimpath
log() { printf '[k8sbins] %s\n' "$*" >&2; }

missing() {
  for b in kube-apiserver kube-controller-manager kube-scheduler etcd kwok; do
    [ -x "$BIN/$b" ] || return 0
  done
  return 1
}
if missing; then
  # Test sessions call this script too: one build at a time, and the others reuse its result.
  mkdir -p "$(dirname "$BIN")"
  exec 9>"$BIN.lock"
  if ! flock -n 9; then
    log "another build holds $BIN.lock; waiting for it"
    flock 9
  fi
fi
if missing; then
  start=$(date +%s)
  mkdir -p "$BIN.tmp"
  cd "$here/k8sbins"
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  kv="-X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1"
  kv="$kv -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
  log "downloading modules for Kubernetes $K8S_VERSION"
  go mod download
  for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
    if [ ! -x "$BIN.tmp/$cmd" ]; then
      log "building $cmd ($(( $(date +%s) - start ))s elapsed)"
      go build -pgo=off -ldflags "-s -w $kv" -o "$BIN.tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd"
    fi
  done
  if [ ! -x "$BIN.tmp/etcd" ]; then
    log "building etcd ($(( $(date +%s) - start ))s elapsed)"
    go build -ldflags "-s -w" -o "$BIN.tmp/etcd" go.etcd.io/etcd/server/v3
  fi
  if [ ! -x "$BIN.tmp/kwok" ]; then
    log "building kwok $KWOK_VERSION ($(( $(date +%s) - start ))s elapsed)"
    GOFLAGS=-trimpath GOBIN="$BIN.tmp" go install "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  fi
  rm -rf "$BIN"; mv "$BIN.tmp" "$BIN"
  log "built in $(( $(date +%s) - start ))s into $BIN"
fi
"$BIN/kube-apiserver" --version >&2
"$BIN/etcd" --version | sed -n 1p >&2  # sed reads all: `head` could SIGPIPE etcd under pipefail
echo "$BIN"
