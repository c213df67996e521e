#!/usr/bin/env bash
# Both images as docker-save tarballs in a cache outside the repo, built once per content hash:
#   ~/.cache/torchjob/images/torchjob-<image>-<hash>.tar   (TORCHJOB_IMAGE_CACHE overrides the folder)
# The hash covers everything the image build reads (Dockerfiles, packages, pyproject.toml, the build
# script), so unchanged code reuses the tarball and needs no Docker at all. On a miss it builds with
# `hack/build-images.sh --local-base` (debootstrap base, host-side wheelhouse cached per pyproject.toml),
# starting Debian's dockerd by hand when none answers, and stops that dockerd again.
# Each tarball carries two tags: torchjob-<image>:<version> (what examples and the chart name) and
# torchjob-<image>:h<hash> (unique per content). Prints `<image>=<tarball>` lines; `--tag` prints the
# hash tag instead. Timings go to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
cache=${TORCHJOB_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/torchjob/images}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n1)
IMAGES=${IMAGES:-operator trainer}
log() { echo "[images] $*" >&2; }

# What reaches the image: the packages it installs (core/ and its own folder, with their pyproject.toml
# and the Dockerfile) and how it is built. The root pyproject.toml and README.md are copied into the build
# stage only (the final stage takes /opt/torchjob), so test markers or docs do not rebuild several GB.
content_hash() {
  local image=$1
  { printf '%s\n' "$image" "$VERSION"
    git ls-files -co --exclude-standard -- .dockerignore hack/build-images.sh core "$image" |
      grep -v '__pycache__' | LC_ALL=C sort -u |
      while read -r f; do [ -f "$f" ] && sha256sum "$f"; done
  } | sha256sum | cut -c1-16
}

dockerd_pid=""
docker_sock=/run/torchjob-docker/docker.sock
stop_dockerd() {
  if [ -n "$dockerd_pid" ]; then
    kill "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$dockerd_pid" 2>/dev/null || true
    dockerd_pid=""
  fi
}
trap stop_dockerd EXIT
ensure_docker() {
  if [ -n "${DOCKER:-}" ]; then return; fi
  if docker info >/dev/null 2>&1; then DOCKER=docker; return; fi
  command -v dockerd >/dev/null || { log "no Docker engine and no dockerd (apt-get install docker.io)"; exit 1; }
  mkdir -p /run/torchjob-docker "${TORCHJOB_DOCKER_ROOT:-$cache/../docker}"
  log "starting dockerd (no iptables, no bridge: builds run offline with --network none)"
  # No iptables changes and no docker0: the machine's firewall and links stay as they were.
  dockerd --host "unix://$docker_sock" --data-root "${TORCHJOB_DOCKER_ROOT:-$cache/../docker}" \
    --exec-root /run/torchjob-docker/exec --pidfile /run/torchjob-docker/dockerd.pid \
    --iptables=false --ip-forward=false --ip-masq=false --bridge=none \
    >/run/torchjob-docker/dockerd.log 2>&1 &
  dockerd_pid=$!
  DOCKER="docker -H unix://$docker_sock"
  for _ in $(seq 150); do $DOCKER info >/dev/null 2>&1 && return; kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done
  log "dockerd did not come up; last log lines:"; tail -n 20 /run/torchjob-docker/dockerd.log >&2; exit 1
}

mkdir -p "$cache"
print_tag=0; [ "${1:-}" != "--tag" ] || print_tag=1
for image in $IMAGES; do
  hash=$(content_hash "$image")
  tarball=$cache/torchjob-$image-$hash.tar
  if [ ! -f "$tarball" ]; then
    ensure_docker
    start=$(date +%s)
    log "building torchjob-$image (content $hash)"
    # The build context carries build/wheelhouse: only this image's wheels (hard links to the cache).
    rm -rf build/wheelhouse
    DOCKER=$DOCKER TAG=$VERSION IMAGES=$image DOCKER_BUILD_FLAGS="--network none" \
      WHEELHOUSE_CACHE=${WHEELHOUSE_CACHE:-$cache/../wheelhouse} hack/build-images.sh --local-base >/dev/null
    built=$(date +%s)
    $DOCKER tag "torchjob-$image:$VERSION" "torchjob-$image:h$hash"
    $DOCKER save "torchjob-$image:$VERSION" "torchjob-$image:h$hash" -o "$tarball.partial"
    mv "$tarball.partial" "$tarball"
    size=$($DOCKER image inspect -f '{{.Size}}' "torchjob-$image:h$hash")
    log "torchjob-$image: build $(( built - start ))s, save $(( $(date +%s) - built ))s," \
        "image $(( size / 1048576 )) MiB, tarball $(( $(stat -c %s "$tarball") / 1048576 )) MiB"
    # The tarball is the cache: keeping the image (and the dangling build stage) in dockerd's store as
    # well would double several GB on a shared disk. The debootstrap base stays for the next build.
    $DOCKER rmi "torchjob-$image:$VERSION" "torchjob-$image:h$hash" >/dev/null
    $DOCKER image prune --force >/dev/null
    # Older tarballs of this image are dead weight (several GB for the trainer).
    find "$cache" -maxdepth 1 -name "torchjob-$image-*.tar" ! -name "torchjob-$image-$hash.tar" -delete
  fi
  if [ "$print_tag" = 1 ]; then echo "$image=h$hash"; else echo "$image=$tarball"; fi
done
