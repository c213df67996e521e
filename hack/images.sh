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
containerd_root=${TORCHJOB_CONTAINERD_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/torchjob/node/containerd}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n1)
IMAGES=${IMAGES:-operator trainer}
log() { echo "[images] $*" >&2; }

# What reaches the image: the packages it installs (core/ and its own folder, with their pyproject.toml
# and the Dockerfile) and how it is built, so test markers or docs do not rebuild several GB.
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
  log "starting dockerd (no iptables, no bridge: builds use the host network for the loopback wheelhouse only)"
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

# Before a build: what earlier runs left takes the room this one needs (the trainer needs about 12 GB
# while it builds, and 6 GB for its tarball). Older tarballs of the image are dead weight once it is
# rebuilt, and a failed build can leave containers and dangling layers of several GB in dockerd's store.
free_disk() {
  find "$cache" -maxdepth 1 -name "torchjob-$1-*.tar*" -delete
  $DOCKER container prune --force >/dev/null
  $DOCKER images -q "torchjob-$1" | sort -u | xargs -r $DOCKER rmi --force >/dev/null
  $DOCKER image prune --force >/dev/null
  # The real node's containerd store (tests/harness/realnode.py: containerd_root) holds the old trainer
  # twice over (blobs and unpacked snapshot, 11 GB). It is a cache of these tarballs: with no node
  # running and nothing mounted from it, drop it; the next node start imports the new tarballs.
  if [ "$1" = trainer ] && [ -d "$containerd_root" ] && [ ! -S /run/torchjob-node/containerd.sock ] &&
     ! findmnt -rn -o TARGET | grep -q "^$containerd_root"; then
    rm -rf "$containerd_root"
  fi
  log "free before building torchjob-$1: $(df -h --output=avail "$cache" | tail -n1 | tr -d ' ')"
}

mkdir -p "$cache"
# One build at a time per cache: a second caller (`--tag` from a test fixture, say) waits for the tarballs
# instead of starting a second dockerd on the same data root and pruning the first build's files.
exec 9>"$cache/.lock"
flock 9
print_tag=0; [ "${1:-}" != "--tag" ] || print_tag=1
for image in $IMAGES; do
  hash=$(content_hash "$image")
  tarball=$cache/torchjob-$image-$hash.tar
  if [ ! -f "$tarball" ]; then
    ensure_docker
    start=$(date +%s)
    log "building torchjob-$image (content $hash)"
    free_disk "$image"
    DOCKER=$DOCKER TAG=$VERSION IMAGES=$image \
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
  fi
  if [ "$print_tag" = 1 ]; then echo "$image=h$hash"; else echo "$image=$tarball"; fi
done
