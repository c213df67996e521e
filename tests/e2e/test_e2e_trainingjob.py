"""A TrainingJob on a real cluster: the installed operator runs examples/cpu-gloo-2node.yaml to
Succeeded, and every rank serves its Prometheus metrics while it trains."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml
from e2e.support import Kubectl, eventually, progress

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cpu-gloo-2node.yaml"
JOB_LABEL = "torchjob.dev/job-name"
CPU_REQUEST = os.environ.get("TORCHJOB_E2E_CPU_REQUEST", "250m")


def example() -> dict[str, Any]:
    """The example with its CPU request lowered (limits kept): 2 x 2 CPUs does not fit next to the control
    plane, CoreDNS and the operator on a laptop-sized kind node (seen on a 2-core machine)."""
    job = dict(yaml.safe_load(EXAMPLE.read_text()))
    job["spec"]["resources"]["requests"]["cpu"] = CPU_REQUEST
    return job


def apply(kubectl: Kubectl, job: dict[str, Any], namespace: str) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(job))


def status_line(kubectl: Kubectl, name: str, namespace: str) -> tuple[str, dict[str, Any]]:
    job = kubectl.json("get", "trainingjob", name, "-n", namespace)
    status = job.get("status") or {}
    nodes = status.get("nodes") or {}
    progress(
        f"{namespace}/{name}: phase={status.get('phase', '-')} attempt={status.get('attempt', 0)} "
        f"nodes running={nodes.get('running', 0)} succeeded={nodes.get('succeeded', 0)} "
        f"failed={nodes.get('failed', 0)}"
    )
    return str(status.get("phase", "")), status


def wait_for_phase(kubectl: Kubectl, name: str, namespace: str, want: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        phase, status = status_line(kubectl, name, namespace)
        assert phase != "Failed" or want == "Failed", f"{name} failed: {status.get('conditions')}"
        return status if phase == want else None

    return dict(eventually(reached, f"{namespace}/{name} to be {want}", every=5))


def test_operator_is_available(kubectl: Kubectl, operator_namespace: str) -> None:
    crd = kubectl.json("get", "crd", "trainingjobs.torchjob.dev")
    assert {c["type"]: c["status"] for c in crd["status"]["conditions"]}["Established"] == "True"
    deployments = kubectl.json(
        "get", "deployment", "-n", operator_namespace, "-l", "app.kubernetes.io/component=operator"
    )["items"]
    assert deployments, f"no operator Deployment in {operator_namespace}"
    for deployment in deployments:
        assert deployment["status"].get("availableReplicas", 0) >= 1, deployment["metadata"]["name"]


def test_example_runs_to_succeeded(kubectl: Kubectl, e2e_namespace: str) -> None:
    job = example()
    apply(kubectl, job, e2e_namespace)
    name = job["metadata"]["name"]
    status = wait_for_phase(kubectl, name, e2e_namespace, "Succeeded")
    assert status["nodes"]["succeeded"] == job["spec"]["nodes"]
    pods = kubectl.json("get", "pods", "-n", e2e_namespace, "-l", f"{JOB_LABEL}={name}")["items"]
    assert len([p for p in pods if p["status"]["phase"] == "Succeeded"]) == job["spec"]["nodes"]


def test_every_rank_serves_metrics_while_training(kubectl: Kubectl, e2e_namespace: str) -> None:
    job = copy.deepcopy(example())
    name = job["metadata"]["name"] = "metrics-e2e"
    # Long enough to scrape: the example itself finishes in seconds.
    job["spec"]["args"] = [*job["spec"]["args"], "--steps-per-epoch", "400", "--sample-cost-us", "2000"]
    apply(kubectl, job, e2e_namespace)
    wait_for_phase(kubectl, name, e2e_namespace, "Running")
    pods = kubectl.json("get", "pods", "-n", e2e_namespace, "-l", f"{JOB_LABEL}={name}")["items"]
    assert len(pods) == job["spec"]["nodes"]
    for pod in pods:
        (trainer,) = [c for c in pod["spec"]["containers"] if c["name"] == "trainer"]
        ports = {
            p["name"]: p["containerPort"]
            for p in trainer.get("ports", [])
            if p["name"].startswith("metrics-")
        }
        assert len(ports) == job["spec"]["procsPerNode"], ports
        for port_name, port in sorted(ports.items()):
            path = f"/api/v1/namespaces/{e2e_namespace}/pods/{pod['metadata']['name']}:{port}/proxy/metrics"

            def scraped(path: str = path) -> str | None:
                proc = kubectl("get", "--raw", path, check=False)
                text = proc.stdout
                return text if proc.returncode == 0 and "torchjob_trainer_samples_total{" in text else None

            text = eventually(scraped, f"metrics of {pod['metadata']['name']} {port_name}", every=2)
            line = next(x for x in text.splitlines() if x.startswith("torchjob_trainer_samples_total{"))
            progress(f"{pod['metadata']['name']} {port_name}: {line}")
            assert f'job="{name}"' in line
    wait_for_phase(kubectl, name, e2e_namespace, "Succeeded")
