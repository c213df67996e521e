#!/usr/bin/env bash
# Installs the Debian packages the real test node and the offline image builds need (tests/e2e, hack/node.sh,
# hack/images.sh). No package starts a daemon here (no systemd; policy-rc.d): the harness starts each one.
set -euo pipefail
PACKAGES=(containerd runc containernetworking-plugins iptables conntrack socat docker.io debootstrap)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ "${#missing[@]}" -eq 0 ] && exit 0
sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
echo "[nodedeps] apt-get install ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
