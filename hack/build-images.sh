#!/usr/bin/env bash
# Builds the two images from the repo root: torchjob-operator (no torch) and torchjob-trainer (no kopf).
#
#   hack/build-images.sh                   # BASE_IMAGE from a registry, packages from PIP_INDEX_URL
#   hack/build-images.sh --offline         # packages from a host-side wheelhouse (build/wheelhouse/<image>),
#                                          # served to the build on loopback (--network host)
#   hack/build-images.sh --local-base      # also make the base image locally (debootstrap + docker import):
#                                          # for machines that reach Debian and PyPI but no container registry
#
# Environment: TAG (default: the version in pyproject.toml), BASE_IMAGE, PIP_INDEX_URL, PIP_EXTRA_INDEX_URL,
# IMAGES ("operator trainer"), DOCKER (docker), DOCKER_BUILD_FLAGS (extra `docker build` flags),
# WHEELHOUSE_CACHE (a folder outside the repo that keeps downloaded wheels per
# core/ + image pyproject.toml, so a fresh clone does not download torch again). Prints the built image names, one a line.
set -euo pipefail
cd "$(dirname "$0")/.."

offline=0
local_base=0
for arg in "$@"; do
  case "$arg" in
    --offline) offline=1 ;;
    --local-base) local_base=1; offline=1 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "build-images.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

DOCKER=${DOCKER:-docker}
TAG=${TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n1)}
IMAGES=${IMAGES:-operator trainer}
PIP_INDEX_URL=${PIP_INDEX_URL:-https://pypi.org/simple}
LOCAL_BASE=torchjob-localbase/bookworm-python:3.11
log() { echo "[build-images] $*" >&2; }

make_local_base() {
  if $DOCKER image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
    return
  fi
  command -v debootstrap >/dev/null || { log "--local-base needs debootstrap (apt-get install debootstrap)"; exit 1; }
  local root
  root=$(mktemp -d)
  trap 'rm -rf "$root"' RETURN
  log "debootstrap bookworm (minbase + python3) into $root"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$root" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >/dev/null
  tar -C "$root" -c . | $DOCKER import - "$LOCAL_BASE" >/dev/null
}

# The host downloads every wheel the image installs (plus hatchling, the build backend), so that
# `docker build` needs no package index: containers may not trust the host's TLS chain. Sets $wheels.
fill_wheelhouse() {
  local image=$1
  local pip=(python3 -m pip)
  "${pip[@]}" --version >/dev/null 2>&1 || pip=(uvx --from "pip==24.3.1" pip)
  wheels=build/wheelhouse/$image
  if [ -n "${WHEELHOUSE_CACHE:-}" ]; then
    # Keyed by the two pyproject files that pin what the image installs; older keys of this image are
    # several GB of dead weight (the trainer's CUDA wheels).
    local key
    key=$image-$(cat core/pyproject.toml "$image/pyproject.toml" | sha256sum | cut -c1-16)
    wheels=$WHEELHOUSE_CACHE/$key
    # A cold machine has no cache yet: `find` on a missing folder fails the build under `set -e`.
    mkdir -p "$WHEELHOUSE_CACHE"
    find "$WHEELHOUSE_CACHE" -mindepth 1 -maxdepth 1 -name "$image-*" ! -name "$key" -exec rm -rf {} +
  fi
  mkdir -p "$wheels"
  log "pip download ./core ./$image (their dependencies) into $wheels"
  local extra=()
  [ -z "${PIP_EXTRA_INDEX_URL:-}" ] || extra=(--extra-index-url "$PIP_EXTRA_INDEX_URL")
  # pip skips wheels already in the folder.
  "${pip[@]}" download --quiet --disable-pip-version-check --only-binary=:all: --dest "$wheels" \
    --index-url "$PIP_INDEX_URL" "${extra[@]}" "hatchling>=1.27" ./core "./$image"
}

# Serves $1 on a free loopback port for the build's pip (`--network host`), and sets $wheel_url.
# Wheels reach the container over HTTP instead of through the build context: a context (and a COPY
# layer) of the trainer's 2.9 GB wheelhouse would take twice that again on the builder's disk.
server_pid=""
stop_server() { [ -z "$server_pid" ] || kill "$server_pid" 2>/dev/null || true; server_pid=""; }
trap stop_server EXIT
serve_wheelhouse() {
  local port_file
  port_file=$(mktemp)
  python3 -c '
import functools, http.server, sys
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args): pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=sys.argv[1]))
print(server.server_address[1], flush=True)
server.serve_forever()
' "$1" >"$port_file" &
  server_pid=$!
  for _ in $(seq 100); do [ -s "$port_file" ] && break; sleep 0.1; done
  [ -s "$port_file" ] || { log "the wheelhouse server did not start"; exit 1; }
  wheel_url="http://127.0.0.1:$(cat "$port_file")/"
  rm -f "$port_file"
}

if [ "$local_base" = 1 ]; then
  make_local_base
  BASE_IMAGE=${BASE_IMAGE:-$LOCAL_BASE}
fi

for image in $IMAGES; do
  args=(--build-arg "PIP_INDEX_URL=$PIP_INDEX_URL")
  [ -z "${BASE_IMAGE:-}" ] || args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
  [ -z "${PIP_EXTRA_INDEX_URL:-}" ] || args+=(--build-arg "PIP_EXTRA_INDEX_URL=$PIP_EXTRA_INDEX_URL")
  if [ "$offline" = 1 ]; then
    fill_wheelhouse "$image"
    serve_wheelhouse "$wheels"
    args+=(--network host --build-arg "WHEELHOUSE_URL=$wheel_url")
  fi
  log "building torchjob-$image:$TAG"
  # shellcheck disable=SC2086  # DOCKER_BUILD_FLAGS is a list of flags
  $DOCKER build --quiet --force-rm ${DOCKER_BUILD_FLAGS:-} -f "$image/Dockerfile" -t "torchjob-$image:$TAG" "${args[@]}" . >/dev/null
  stop_server
  echo "torchjob-$image:$TAG"
done
