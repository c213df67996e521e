#!/usr/bin/env bash
# Builds Kueue's manager from the Go module proxy into a cache outside the repo, keyed by
# version, once, and reuses it afterwards. Prints the binary's directory on the last line;
# the module's own config/ (CRDs, webhook configurations) stays in the Go module cache, where
# tests/harness/kueue.py reads it (`go env GOMODCACHE`), so none of Kueue's files are committed.
# v0.17.0 is the newest version the proxy serves (`go list -m -versions sigs.k8s.io/kueue`);
# its client libraries are Kubernetes 0.35.3, within client skew of the harness' 1.36 apiserver.
set -euo pipefail
KUEUE_VERSION=${KUEUE_VERSION:-v0.17.0}
BIN=${KUEUE_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/torchjob/kueue/${KUEUE_VERSION}}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-trimpath
log() { printf '[kueue] %s\n' "$*" >&2; }

if [ ! -x "$BIN/kueue" ]; then
  # Test sessions call this script too: one build at a time, and the others reuse its result.
  mkdir -p "$(dirname "$BIN")"
  exec 9>"$BIN.lock"
  if ! flock -n 9; then
    log "another build holds $BIN.lock; waiting for it"
    flock 9
  fi
fi
if [ ! -x "$BIN/kueue" ]; then
  start=$(date +%s)
  rm -rf "$BIN.tmp"; mkdir -p "$BIN.tmp"
  log "building sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION"
  # Kueue's go.mod has no replace directives, so `go install mod@version` builds it as released.
  GOBIN="$BIN.tmp" go install -ldflags "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION" \
    "sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION"
  go mod download "sigs.k8s.io/kueue@$KUEUE_VERSION"  # config/ (CRDs) for the harness
  rm -rf "$BIN"; mv "$BIN.tmp" "$BIN"
  log "built in $(( $(date +%s) - start ))s into $BIN"
fi
echo "$BIN"
