"""The real operator process, run with exactly the chart's namespaced RBAC (a ServiceAccount token),
peers through the chart's KopfPeering, creates a job's pods, and serves /healthz and a /metrics
endpoint that `promtool check metrics` accepts."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from harness.controlplane import ControlPlane, service_account_kubeconfig
from harness.kubectl import Kubectl, apply_crds
from harness.polling import eventually

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cpu-gloo-2node.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return str(resp.read().decode())
    except OSError:
        return None


@pytest.fixture(scope="module")
def helm() -> str:
    spec = importlib.util.spec_from_file_location("gen_manifests", ROOT / "hack" / "gen-manifests.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    path = gen.find_helm()
    if path is None:
        pytest.skip("helm is not installed: run hack/tools.sh")
    return str(path)


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed: run hack/tools.sh")
    return path


@pytest.fixture
def operator(
    control_plane: ControlPlane, kubectl: Kubectl, helm: str, namespace: str, tmp_path: Path
) -> Iterator[tuple[int, int, subprocess.Popen[bytes], Path]]:
    apply_crds(kubectl, ROOT / "manifests" / "kopf-peerings.yaml")
    sets = ["--set", f"watchNamespaces={{{namespace}}}", "--set", "crds.enabled=false"]
    out = subprocess.run(
        [helm, "template", "tj", str(ROOT / "charts" / "torchjob"), "--namespace", namespace, *sets],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    docs = [d for d in yaml.safe_load_all(out) if d]
    wanted = [d for d in docs if d["kind"] in ("ServiceAccount", "Role", "RoleBinding", "KopfPeering")]
    kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(wanted))
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    metrics_port, health_port = free_port(), free_port()
    args = [a for a in args if not a.startswith(("--metrics-port", "--health-port"))]
    args += [f"--metrics-port={metrics_port}", f"--health-port={health_port}"]
    sa_kubeconfig = service_account_kubeconfig(control_plane, namespace, "tj-torchjob-operator")
    env = dict(os.environ, KUBECONFIG=str(sa_kubeconfig), POD_ID="tj-operator-test")
    log = tmp_path / "operator.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "torchjob_operator", *args], env=env, stdout=fh, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            yield metrics_port, health_port, proc, log
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


@pytest.mark.usefixtures("crd")
def test_operator_with_chart_rbac_serves_metrics_promtool_accepts(
    operator: tuple[int, int, subprocess.Popen[bytes], Path], kubectl: Kubectl, namespace: str, promtool: str
) -> None:
    metrics_port, health_port, proc, log = operator

    def alive(url: str) -> str | None:
        assert proc.poll() is None, f"operator exited {proc.returncode}:\n{log.read_text()[-4000:]}"
        return get(url)

    eventually(lambda: alive(f"http://127.0.0.1:{health_port}/healthz"), 60, "operator /healthz")
    kubectl("apply", "-n", namespace, "-f", str(EXAMPLE))
    job = yaml.safe_load(EXAMPLE.read_text())

    def pods_created() -> str | None:
        text = alive(f"http://127.0.0.1:{metrics_port}/metrics")
        if text and f"torchjob_operator_pods_created_total {float(job['spec']['nodes'])}" in text:
            return text
        return None

    text = eventually(pods_created, 90, f"{job['spec']['nodes']} pods created (operator log: {log})")
    pods = kubectl("get", "pods", "-n", namespace, "-o", "name").stdout.split()
    assert len(pods) == job["spec"]["nodes"]
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    # Every operator metric the Grafana dashboard queries is in this real scrape.
    dashboard = (ROOT / "charts/torchjob/files/dashboards/torchjob-training.json").read_text()
    named = set(re.findall(r"torchjob_operator_[a-z0-9_]+", dashboard))
    exported = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if not line.startswith("#")}
    assert named and named <= exported, sorted(named - exported)
    # The RBAC the chart grants is enough: the operator logged no authorization failure.
    assert "403" not in log.read_text() and "Forbidden" not in log.read_text(), log.read_text()[-4000:]
