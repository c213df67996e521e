#!/usr/bin/env bash
# Builds the Prometheus Operator and its config reloader (hack/promoperator: pinned in go.mod), and
# Prometheus itself (hack/prometheus: upstream's cmd/prometheus/main.go with only the kubernetes service
# discovery; Debian's prometheus has no kubernetes_sd at all) from the Go module proxy into a cache outside
# the repo, keyed by version; reuses them afterwards. Prints the
# directory on the last line; it also holds the operator's CRDs (copied from the module). PROMOP_DIR
# overrides it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
VERSION=$(sed -n 's#^require github.com/prometheus-operator/prometheus-operator \(v[0-9.]*\)$#\1#p' "$here/promoperator/go.mod")
BIN=${PROMOP_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/torchjob/prometheus-operator/$VERSION}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-trimpath
log() { printf '[promoperator] %s\n' "$*" >&2; }
missing() {
  [ ! -x "$BIN/operator" ] || [ ! -x "$BIN/prometheus-config-reloader" ] || [ ! -x "$BIN/prometheus" ] ||
    [ ! -d "$BIN/crds" ]
}
if missing; then
  mkdir -p "$(dirname "$BIN")"
  exec 9>"$BIN.lock"
  if ! flock -n 9; then log "another build holds $BIN.lock; waiting for it"; flock 9; fi
fi
if missing; then
  start=$(date +%s)
  mkdir -p "$BIN.tmp/crds"
  cd "$here/promoperator"
  go mod download
  mod=github.com/prometheus-operator/prometheus-operator
  ver="-X github.com/prometheus/common/version.Version=${VERSION#v}"
  for cmd in operator prometheus-config-reloader; do
    log "building $cmd $VERSION ($(( $(date +%s) - start ))s elapsed)"
    go build -ldflags "-s -w $ver" -o "$BIN.tmp/$cmd" "$mod/cmd/$cmd"
  done
  src=$(go list -m -f '{{.Dir}}' "$mod")
  # All of them: the Prometheus controller also watches Probes, ScrapeConfigs and PrometheusRules.
  cp "$src"/example/prometheus-operator-crd/*.yaml "$BIN.tmp/crds/"
  chmod -R u+w "$BIN.tmp/crds"
  log "building prometheus (kubernetes service discovery only) ($(( $(date +%s) - start ))s elapsed)"
  pmod=github.com/prometheus/prometheus
  pver=$(sed -n "s#^require $pmod \(v[0-9.]*\)\$#\1#p" "$here/prometheus/go.mod")
  n=${pver#v0.}; mm=${n%%.*}
  pversion=$(( mm / 100 )).$(( mm % 100 )).${n#*.}  # module v0.305.0 is Prometheus 3.5.0
  work=$(mktemp -d)
  cp "$here/prometheus/go.mod" "$here/prometheus/go.sum" "$work/"
  (cd "$work" && go mod download "$pmod" &&
    sed 's#_ "github.com/prometheus/prometheus/plugins".*#_ "github.com/prometheus/prometheus/discovery/kubernetes"#' \
      "$(go list -m -f '{{.Dir}}' "$pmod")/cmd/prometheus/main.go" > main.go &&
    go build -ldflags "-s -w -X github.com/prometheus/common/version.Version=$pversion" -o "$BIN.tmp/prometheus" .)
  rm -rf "$work"
  rm -rf "$BIN"; mv "$BIN.tmp" "$BIN"
  log "built in $(( $(date +%s) - start ))s into $BIN"
fi
echo "$BIN"
