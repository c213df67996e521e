"""Where the control-plane binaries live: `$K8SBIN_DIR`, else whatever `hack/k8sbins.sh` prints."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "k8sbins.sh"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


class BinariesUnavailableError(RuntimeError):
    """The binaries are missing and cannot be built here (no Go toolchain)."""


def missing_in(bin_dir: Path) -> list[str]:
    """Components that are not an executable file in `bin_dir`."""
    return [name for name in COMPONENTS if not os.access(bin_dir / name, os.X_OK)]


def locate() -> Path:
    """Returns the directory holding every component, building them once if needed.

    `K8SBIN_DIR` wins when it already holds all binaries. Otherwise `hack/k8sbins.sh` (which reuses its
    cache and prints the directory on its last line) decides; a cold build takes minutes.
    """
    env_dir = os.environ.get("K8SBIN_DIR")
    if env_dir and not missing_in(Path(env_dir)):
        return Path(env_dir)
    if shutil.which("go") is None and not _cached_dir_complete():
        raise BinariesUnavailableError(
            "control-plane binaries are not built and `go` is not on PATH: run hack/k8sbins.sh "
            "on a machine with Go and the Go module proxy, or set K8SBIN_DIR"
        )
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BinariesUnavailableError(
            f"hack/k8sbins.sh failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    bin_dir = Path(proc.stdout.strip().splitlines()[-1])
    if missing := missing_in(bin_dir):
        raise BinariesUnavailableError(f"hack/k8sbins.sh printed {bin_dir}, which lacks {', '.join(missing)}")
    return bin_dir


def _cached_dir_complete() -> bool:
    # Mirrors the script's default cache path so a machine without Go can still reuse a finished build.
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "torchjob" / "k8sbin"
    return cache.is_dir() and any(not missing_in(d) for d in cache.iterdir() if d.is_dir())
