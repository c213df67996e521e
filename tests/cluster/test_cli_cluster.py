"""`torchjob submit/get/describe/logs/top/delete` against the real kube-apiserver.

No operator runs here: the tests write the status and Events the operator would, and create KWOK pods
with the operator's labels. KWOK pods serve no logs and no metrics endpoints, so `logs` and `top` are
checked for finding the right pods and degrading with a clear message; their formatting is unit-tested.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness.polling import eventually
from kubernetes import client
from torchjob_cli.main import main

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cpu-gloo-2node.yaml"
GROUP, VERSION, PLURAL = "torchjob.dev", "v1alpha1", "trainingjobs"

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(
    control_plane: Any,
    crd: Any,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Cli:
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([*args, "--kubeconfig", str(control_plane.kubeconfig), "-n", namespace])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def custom(kube: client.ApiClient) -> Any:
    return client.CustomObjectsApi(kube)


def test_submit_get_describe_delete(cli: Cli, kube: client.ApiClient, namespace: str, tmp_path: Path) -> None:
    code, out, _ = cli("submit", str(EXAMPLE))
    assert (code, out.strip()) == (0, "trainingjob.torchjob.dev/cpu-gloo created")
    job = custom(kube).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "cpu-gloo")
    assert job["spec"]["nodes"] == 2

    # Submitting again updates in place (kubectl apply's "configured"): runPolicy may change while it runs,
    # the rest of the spec only while it is suspended (CEL names the field).
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"].setdefault("runPolicy", {})["backoffLimit"] = 5
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(doc))
    code, out, _ = cli("submit", str(changed))
    assert (code, out.strip()) == (0, "trainingjob.torchjob.dev/cpu-gloo configured")
    doc["spec"]["args"] = [*doc["spec"]["args"], "--lr", "0.1"]
    changed.write_text(yaml.safe_dump(doc))
    code, out, err = cli("submit", str(changed))
    assert code == 1 and "spec.args is immutable while the job runs" in out + err, (out, err)

    # What the operator would write: status with conditions, and an Event on the job.
    custom(kube).patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "cpu-gloo",
        {
            "status": {
                "phase": "Restarting",
                "attempt": 1,
                "restartCount": 1,
                "lastExitCode": 143,
                "nodes": {"total": 2, "pending": 0, "running": 1, "succeeded": 0, "failed": 1},
                "conditions": [
                    {
                        "type": "Restarting",
                        "status": "True",
                        "reason": "RetryableExitCode",
                        "message": "node 1 exited with 143 (retryable); gang restart 1 of 2",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }
                ],
            }
        },
    )
    client.CoreV1Api(kube).create_namespaced_event(
        namespace,
        {
            "metadata": {"generateName": "cpu-gloo."},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "TrainingJob",
                "name": "cpu-gloo",
                "namespace": namespace,
                "uid": job["metadata"]["uid"],
            },
            "type": "Warning",
            "reason": "GangRestart",
            "message": "restarting all nodes after exit code 143",
            "source": {"component": "torchjob-operator"},
            "firstTimestamp": "2026-01-01T00:00:00Z",
            "lastTimestamp": "2026-01-01T00:00:00Z",
            "count": 1,
        },
    )

    code, out, _ = cli("get")
    assert code == 0
    header, row = out.strip().splitlines()
    assert header.split() == ["NAME", "PHASE", "NODES", "RESTARTS", "EXIT", "PROGRESS", "ETA", "AGE"]
    assert row.split()[:5] == ["cpu-gloo", "Restarting", "1/2", "1", "143"]

    code, out, _ = cli("get", "cpu-gloo", "-o", "yaml")
    assert code == 0 and yaml.safe_load(out)["spec"]["runPolicy"]["backoffLimit"] == 5

    code, out, _ = cli("describe", "cpu-gloo")
    assert code == 0
    assert "Restarting" in out and "RetryableExitCode" in out
    assert "node 1 exited with 143 (retryable); gang restart 1 of 2" in out
    assert "GangRestart" in out and "restarting all nodes after exit code 143" in out
    assert "torchjob-operator" in out

    code, out, _ = cli("delete", "cpu-gloo", "--wait")
    assert (code, out.strip()) == (0, "trainingjob.torchjob.dev/cpu-gloo deleted")
    code, _, err = cli("get", "cpu-gloo")
    assert code == 1 and "not found" in (err + _)


FINALIZER = "operator.torchjob.dev/finalizer"


def test_resubmit_keeps_what_others_own(
    cli: Cli, kube: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    """A second submit changes what the manifest names and nothing else: the operator's finalizer and
    annotations, Kueue's and an admin's labels and annotations, and spec fields the manifest leaves out
    stay, as with `kubectl apply`."""
    assert cli("submit", str(EXAMPLE))[1].strip() == "trainingjob.torchjob.dev/cpu-gloo created"
    api = custom(kube)
    try:
        # What the operator (Kopf), Kueue and an admin write onto a live job, each as its own manager.
        others = {
            "torchjob-operator": {
                "metadata": {
                    "finalizers": [FINALIZER],
                    "annotations": {"operator.torchjob.dev/last-handled-configuration": "{}"},
                }
            },
            "kueue": {"metadata": {"labels": {"kueue.x-k8s.io/queue-name": "team-a"}}},
            "admin": {
                "metadata": {"annotations": {"example.com/owner": "ml-team"}, "labels": {"tier": "gold"}},
                "spec": {"runPolicy": {"suspend": True}},
            },
        }
        for manager, patch in others.items():
            api.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, "cpu-gloo", patch, field_manager=manager
            )

        doc = yaml.safe_load(EXAMPLE.read_text())
        doc["spec"]["args"] = [*doc["spec"]["args"], "--lr", "0.1"]
        doc["metadata"]["labels"] = {"app": "mlp"}
        changed = tmp_path / "changed.yaml"
        changed.write_text(yaml.safe_dump(doc))
        code, out, _ = cli("submit", str(changed))
        assert (code, out.strip()) == (0, "trainingjob.torchjob.dev/cpu-gloo configured")

        job = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "cpu-gloo")
        meta = job["metadata"]
        assert job["spec"]["args"][-2:] == ["--lr", "0.1"]
        assert meta.get("finalizers") == [FINALIZER]
        assert meta["annotations"]["operator.torchjob.dev/last-handled-configuration"] == "{}"
        assert meta["annotations"]["example.com/owner"] == "ml-team"
        assert meta["labels"] == {"app": "mlp", "kueue.x-k8s.io/queue-name": "team-a", "tier": "gold"}
        assert job["spec"]["runPolicy"]["suspend"] is True
        managers = {f["manager"]: f["operation"] for f in meta["managedFields"]}
        assert managers["torchjob-cli"] == "Apply"

        # The same manifest again writes nothing.
        code, out, _ = cli("submit", str(changed))
        assert (code, out.strip()) == (0, "trainingjob.torchjob.dev/cpu-gloo unchanged")
        again = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "cpu-gloo")
        assert again["metadata"]["resourceVersion"] == meta["resourceVersion"]
    finally:
        with contextlib.suppress(client.ApiException):  # no operator here to release it
            api.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, "cpu-gloo", {"metadata": {"finalizers": None}}
            )


def test_submit_rejects_an_invalid_manifest_locally(cli: Cli, tmp_path: Path, kube: client.ApiClient) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"]["env"] = [{"name": "MASTER_ADDR", "value": "x"}]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    code, _, err = cli("submit", str(bad))
    assert code == 2 and "spec.env[0].name:" in err


def trainer_pod(name: str, node: int, attempt: int, exit_code: int | None = None) -> dict[str, Any]:
    annotations = {} if exit_code is None else {"kwok.torchjob.dev/exit-code": str(exit_code)}
    return {
        "metadata": {
            "name": f"{name}-node-{node}-r{attempt}",
            "labels": {
                "torchjob.dev/job-name": name,
                "torchjob.dev/node-index": str(node),
                "torchjob.dev/attempt": str(attempt),
            },
            "annotations": annotations,
        },
        "spec": {
            "containers": [
                {"name": "trainer", "image": "torchjob-trainer:0.1.0", "ports": [{"containerPort": 9400}]}
            ],
            "nodeSelector": {"kubernetes.io/hostname": "cpu-node-0"},
        },
    }


def test_pods_logs_and_top_on_kwok(cli: Cli, kube: client.ApiClient, namespace: str) -> None:
    assert cli("submit", str(EXAMPLE))[0] == 0
    core = client.CoreV1Api(kube)
    custom(kube).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "cpu-gloo", {"status": {"phase": "Running", "attempt": 1}}
    )
    core.create_namespaced_pod(namespace, trainer_pod("cpu-gloo", 0, 0, exit_code=143))
    for node in (0, 1):
        core.create_namespaced_pod(namespace, trainer_pod("cpu-gloo", node, 1))

    def phases() -> dict[str, str] | None:
        pods = core.list_namespaced_pod(namespace).items
        got = {p.metadata.name: p.status.phase for p in pods}
        want = {
            "cpu-gloo-node-0-r0": "Failed",
            "cpu-gloo-node-0-r1": "Running",
            "cpu-gloo-node-1-r1": "Running",
        }
        return got if got == want else None

    eventually(phases, 60, "KWOK pods in their phases")

    code, out, _ = cli("describe", "cpu-gloo")
    assert code == 0
    lines = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln.startswith("cpu-gloo-node-")}
    assert lines["cpu-gloo-node-0-r0"][1:5] == ["0", "0", "Failed", "143"]
    assert lines["cpu-gloo-node-1-r1"][1:4] == ["1", "1", "Running"]

    # KWOK has no kubelet to serve logs: each of the current attempt's pods answers with its error.
    code, out, _ = cli("logs", "cpu-gloo")
    assert code == 0
    assert sorted(ln.split("]")[0] for ln in out.splitlines() if ln.startswith("[node")) == [
        "[node 0",
        "[node 1",
    ]
    assert "(no logs:" in out

    # Nor metrics endpoints: `top` says so instead of failing.
    code, out, _ = cli("top", "cpu-gloo", "--once")
    assert code == 0 and "no rank is serving metrics yet" in out


def test_works_as_a_kubectl_plugin(control_plane: Any, crd: Any, namespace: str, kubectl: Any) -> None:
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "KUBECONFIG": str(control_plane.kubeconfig),
    }
    exe = str(Path(sys.executable).parent / "kubectl")
    run = subprocess.run(
        [exe, "torchjob", "submit", str(EXAMPLE), "-n", namespace],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "trainingjob.torchjob.dev/cpu-gloo created" in run.stdout
    assert "cpu-gloo" in kubectl("get", "tj", "-n", namespace).stdout
