"""The operator image, hardened exactly as the chart's securityContext (read-only root, no
capabilities, uid 10001), runs with the chart's args and namespaced RBAC against the real
kube-apiserver and creates a job's pods. Needs a Docker engine; skipped with the reason otherwise."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from harness.controlplane import ControlPlane, service_account_kubeconfig
from harness.kubectl import Kubectl, apply_crds
from harness.polling import eventually

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
TAG = "0.1.0-test"


@pytest.fixture(scope="module")
def operator_image() -> str:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "info"], capture_output=True, check=False).returncode != 0:
        pytest.skip("no Docker engine answers `docker info`")
    args = ["--local-base"] if os.environ.get("TORCHJOB_IMAGE_BASE", "local") == "local" else []
    env = dict(os.environ, TAG=TAG, IMAGES="operator")
    proc = subprocess.run(
        [str(ROOT / "hack" / "build-images.sh"), *args], cwd=ROOT, env=env, capture_output=True, text=True,
        check=False, timeout=1800,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout.strip()


@pytest.fixture
def container_name() -> Iterator[str]:
    name = f"torchjob-operator-test-{uuid.uuid4().hex[:6]}"
    try:
        yield name
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


@pytest.mark.usefixtures("crd")
def test_hardened_operator_container_creates_pods(  # noqa: PLR0917  (pytest fixtures)
    operator_image: str, helm: str, control_plane: ControlPlane, kubectl: Kubectl, namespace: str,
    container_name: str, tmp_path: Path,
) -> None:  # fmt: skip
    apply_crds(kubectl, ROOT / "manifests" / "kopf-peerings.yaml")
    out = subprocess.run(
        [helm, "template", "tj", str(ROOT / "charts" / "torchjob"), "--namespace", namespace,
         "--set", f"watchNamespaces={{{namespace}}}", "--set", "crds.enabled=false"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    docs = [d for d in yaml.safe_load_all(out) if d]
    rbac = [d for d in docs if d["kind"] in ("ServiceAccount", "Role", "RoleBinding", "KopfPeering")]
    kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(rbac))
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    sa_config = tmp_path / "sa.kubeconfig"
    shutil.copy(service_account_kubeconfig(control_plane, namespace, "tj-torchjob-operator"), sa_config)
    sa_config.chmod(0o644)  # read by uid 10001 inside the container
    health = 18000 + int(uuid.uuid4().int % 1000)
    args = [a for a in container["args"] if not a.startswith("--health-port")] + [f"--health-port={health}"]
    args = [a for a in args if not a.startswith("--metrics-port")] + ["--metrics-port=0"]
    user = f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    subprocess.run(
        ["docker", "run", "-d", "--name", container_name, "--network=host", "--read-only", "--cap-drop=ALL",
         "--security-opt=no-new-privileges", "--tmpfs=/tmp", f"--user={user}",
         "-v", f"{sa_config}:/kube/config:ro", "-e", "KUBECONFIG=/kube/config", "-e", "POD_ID=container-0",
         operator_image, *args],
        capture_output=True, text=True, check=True,
    )  # fmt: skip

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=2):
                return True
        except OSError:
            return False

    try:
        eventually(healthy, 60, "/healthz of the operator container")
    except TimeoutError:
        logs = subprocess.run(["docker", "logs", container_name], capture_output=True, text=True, check=False)
        raise AssertionError(f"operator container not healthy; logs:\n{logs.stderr[-3000:]}") from None
    kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples" / "cpu-gloo-2node.yaml"))
    nodes = yaml.safe_load((ROOT / "examples" / "cpu-gloo-2node.yaml").read_text())["spec"]["nodes"]
    eventually(
        lambda: len(kubectl("get", "pods", "-n", namespace, "-o", "name").stdout.split()) == nodes,
        90, "the job's pods",
    )  # fmt: skip
