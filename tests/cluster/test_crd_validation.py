"""The generated CRD on a real kube-apiserver: examples pass, every invalid manifest of the shared table is
rejected naming its field, defaults agree with spec.load, and `kubectl explain` documents the spec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from data.invalid_cases import InvalidCase, load_cases, load_valid
from harness.kubectl import Kubectl
from torchjob_core import spec
from torchjob_core.render import pods, service

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))
ADMISSION_CASES = [c for c in load_cases() if c.admission]


def _dry_run(kubectl: Kubectl, namespace: str, manifest: dict[str, Any]) -> Any:
    return kubectl(
        "create", "--dry-run=server", "--validate=strict", "-n", namespace, "-o", "json", "-f", "-",
        input=json.dumps(manifest), check=False,
    )  # fmt: skip


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_accepted(crd: Any, kubectl: Kubectl, namespace: str, path: Path) -> None:
    manifest = yaml.safe_load(path.read_text())
    result = _dry_run(kubectl, namespace, manifest)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("case", ADMISSION_CASES, ids=lambda c: c.id)
def test_invalid_manifest_is_rejected_naming_field(
    crd: Any, kubectl: Kubectl, namespace: str, case: InvalidCase
) -> None:
    result = _dry_run(kubectl, namespace, case.manifest)
    assert result.returncode != 0, f"accepted: {case.id}"
    assert case.field in result.stderr, result.stderr


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_apiserver_defaults_match_spec_load(crd: Any, kubectl: Kubectl, namespace: str, path: Path) -> None:
    manifest = yaml.safe_load(path.read_text())
    result = _dry_run(kubectl, namespace, manifest)
    assert result.returncode == 0, result.stderr
    defaulted = json.loads(result.stdout)
    manifest["metadata"]["namespace"] = namespace
    assert spec.load(defaulted).spec == spec.load(manifest).spec


def test_minimal_job_gets_documented_defaults(crd: Any, kubectl: Kubectl, namespace: str) -> None:
    manifest = {
        "apiVersion": "torchjob.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "minimal"},
        "spec": {"image": "torchjob-trainer:0.1.0"},
    }
    result = _dry_run(kubectl, namespace, manifest)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)["spec"]
    assert got["nodes"] == 1
    assert got["procsPerNode"] == "auto"
    assert got["dataLoader"] == {
        "numWorkers": "auto",
        "pinMemory": "auto",
        "persistentWorkers": True,
        "prefetchFactor": 2,
        "autotune": False,
        "autotuneSeconds": 60,
        "batchBytesHint": "64Mi",
    }
    assert got["runPolicy"]["retryableExitCodes"] == [137, 143]
    assert got["scheduling"] == {"gang": False}
    assert "elastic" not in got


def test_explain_documents_fields(crd: Any, kubectl: Kubectl) -> None:
    out = kubectl("explain", "trainingjob.spec.dataLoader").stdout
    for name in (
        "numWorkers",
        "pinMemory",
        "persistentWorkers",
        "prefetchFactor",
        "autotune",
        "batchBytesHint",
    ):
        assert name in out
    assert "worker processes" in kubectl("explain", "tj.spec.dataLoader.numWorkers").stdout


def test_short_name_category_and_printer_columns(crd: Any, kubectl: Kubectl, namespace: str) -> None:
    manifest = {
        "apiVersion": "torchjob.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "columns"},
        "spec": {"image": "torchjob-trainer:0.1.0", "nodes": 2},
    }
    kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(manifest))
    status = {
        "status": {"phase": "Running", "nodesReady": "2/2", "restartCount": 1, "reason": "AllRanksRunning"}
    }
    kubectl(
        "patch",
        "tj",
        "columns",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )
    table = kubectl("get", "torchjob", "-n", namespace).stdout.split("\n")
    assert table[0].split() == ["NAME", "PHASE", "NODES", "RESTARTS", "PROGRESS", "ETA", "AGE", "REASON"]
    row = table[1].split()
    assert row[:4] == ["columns", "Running", "2/2", "1"] and row[-1] == "AllRanksRunning"


@pytest.mark.parametrize(("case_id", "manifest"), load_valid(), ids=[c for c, _ in load_valid()])
def test_valid_edge_case_is_accepted(
    crd: Any, kubectl: Kubectl, namespace: str, case_id: str, manifest: dict[str, Any]
) -> None:
    result = _dry_run(kubectl, namespace, manifest)
    assert result.returncode == 0, f"{case_id}: {result.stderr}"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_rendered_children_are_valid_core_objects(kubectl: Kubectl, namespace: str, path: Path) -> None:
    """The apiserver's own Pod and Service validation accepts what the renderers produce."""
    manifest = yaml.safe_load(path.read_text())
    manifest["metadata"].update(namespace=namespace, uid="00000000-0000-0000-0000-000000000001")
    job = spec.load(manifest)
    children = [service.render_service(job), *(pods.render_pod(job, i, 0) for i in range(job.spec.nodes))]
    for obj in children:
        result = _dry_run(kubectl, namespace, obj)
        assert result.returncode == 0, f"{obj['kind']} {obj['metadata']['name']}: {result.stderr}"


# Edits of a live job (transition rules): each case patches spec and, for a suspended job, status first.
RUNNING_JOB = {"image": "torchjob-trainer:0.1.0", "nodes": 2}
FROZEN_EDITS = [
    ("nodes", {"nodes": 3}),
    ("image", {"image": "torchjob-trainer:0.2.0"}),
    ("args", {"args": ["--lr", "0.1"]}),
    ("env", {"env": [{"name": "A", "value": "1"}]}),
    ("resources", {"resources": {"requests": {"cpu": "2"}}}),
    ("elastic", {"elastic": {"minNodes": 1, "maxNodes": 4}}),
    ("nodeSelector", {"nodeSelector": {"pool": "a"}}),
    ("scheduling", {"scheduling": {"queue": "team-a"}}),
    ("template", {"template": {"metadata": {"labels": {"a": "b"}}}}),
    ("checkpoint.dir", {"checkpoint": {"dir": "/ckpt"}}),
]


def _job(kubectl: Kubectl, namespace: str, name: str, spec_: dict[str, Any], phase: str | None) -> None:
    manifest = {"apiVersion": "torchjob.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name}}
    kubectl("create", "-n", namespace, "-f", "-", input=json.dumps({**manifest, "spec": spec_}))
    if phase is not None:
        _patch(
            kubectl, namespace, name, {"status": {"phase": phase}}, "--subresource=status"
        ).check_returncode()


def _patch(kubectl: Kubectl, namespace: str, name: str, patch: dict[str, Any], *flags: str) -> Any:
    return kubectl(
        "patch", "tj", name, "-n", namespace, "--type=merge", "-p", json.dumps(patch), *flags, check=False
    )  # fmt: skip


@pytest.mark.parametrize(("field", "edit"), FROZEN_EDITS, ids=[f for f, _ in FROZEN_EDITS])
def test_editing_a_running_job_is_rejected_naming_the_field(
    crd: Any, kubectl: Kubectl, namespace: str, field: str, edit: dict[str, Any]
) -> None:
    _job(kubectl, namespace, "live", RUNNING_JOB, "Running")
    result = _patch(kubectl, namespace, "live", {"spec": edit})
    assert result.returncode != 0, f"accepted: {field}"
    assert f"spec.{field}: Invalid value" in result.stderr, result.stderr
    assert f"spec.{field} is immutable while the job runs: suspend it" in result.stderr, result.stderr


def test_every_edit_is_rejected_at_once_before_the_operator_saw_suspend(
    crd: Any, kubectl: Kubectl, namespace: str
) -> None:
    # suspend: true in the same edit, or before the operator reported Suspended (its pods may still run).
    _job(kubectl, namespace, "racing", RUNNING_JOB, "Running")
    result = _patch(kubectl, namespace, "racing", {"spec": {"nodes": 3, "runPolicy": {"suspend": True}}})
    assert result.returncode != 0 and "spec.nodes is immutable" in result.stderr, result.stderr
    _patch(kubectl, namespace, "racing", {"spec": {"runPolicy": {"suspend": True}}}).check_returncode()
    result = _patch(kubectl, namespace, "racing", {"spec": {"nodes": 3}})
    assert result.returncode != 0 and "spec.nodes is immutable" in result.stderr, result.stderr


def test_run_policy_edits_of_a_running_job_are_accepted(crd: Any, kubectl: Kubectl, namespace: str) -> None:
    _job(kubectl, namespace, "policy", RUNNING_JOB, "Running")
    run_policy = {
        "backoffLimit": 7,
        "backoffSeconds": 5,
        "activeDeadlineSeconds": 3600,
        "startupDeadlineSeconds": 600,
        "ttlSecondsAfterFinished": 60,
        "cleanPodPolicy": "All",
        "successPolicy": "Node0",
        "retryableExitCodes": [137],
        "permanentExitCodes": [2],
    }
    for patch in (
        {"runPolicy": run_policy},
        {"runPolicy": {"suspend": True}},
        {"runPolicy": {"suspend": False}},
    ):
        _patch(kubectl, namespace, "policy", {"spec": patch}).check_returncode()
    got = json.loads(kubectl("get", "tj", "policy", "-n", namespace, "-o", "json").stdout)["spec"]
    assert got["runPolicy"] == {**run_policy, "suspend": False}


@pytest.mark.parametrize("phase", ["Suspended", None], ids=["reported", "never-reconciled"])
def test_a_suspended_job_accepts_any_edit(
    crd: Any, kubectl: Kubectl, namespace: str, phase: str | None
) -> None:
    _job(kubectl, namespace, "paused", {**RUNNING_JOB, "runPolicy": {"suspend": True}}, phase)
    for _, edit in FROZEN_EDITS:
        _patch(kubectl, namespace, "paused", {"spec": edit}).check_returncode()
    # Resuming together with an edit is one more edit of a suspended job.
    _patch(
        kubectl, namespace, "paused", {"spec": {"nodes": 4, "runPolicy": {"suspend": False}}}
    ).check_returncode()
    got = json.loads(kubectl("get", "tj", "paused", "-n", namespace, "-o", "json").stdout)["spec"]
    assert (
        got["nodes"] == 4
        and got["image"] == "torchjob-trainer:0.2.0"
        and got["runPolicy"]["suspend"] is False
    )
    result = _patch(kubectl, namespace, "paused", {"spec": {"nodes": 2}})
    assert result.returncode != 0 and "spec.nodes is immutable" in result.stderr, result.stderr


@pytest.mark.parametrize("phase", ["Running", "Suspended"])
def test_managed_by_and_checkpoint_storage_never_change(
    crd: Any, kubectl: Kubectl, namespace: str, phase: str
) -> None:
    storage = {"checkpoint": {"storage": {"size": "1Gi"}}}
    suspended = {"runPolicy": {"suspend": phase == "Suspended"}}
    _job(kubectl, namespace, "fixed", {**RUNNING_JOB, **storage, **suspended}, phase)
    for edit, field in (
        ({"managedBy": "kueue.x-k8s.io/multikueue"}, "spec.managedBy"),
        ({"checkpoint": {"storage": {"size": "2Gi"}}}, "spec.checkpoint.storage"),
        ({"checkpoint": {"storage": None}}, "spec.checkpoint.storage"),
    ):
        result = _patch(kubectl, namespace, "fixed", {"spec": edit})
        assert result.returncode != 0, f"accepted: {edit}"
        assert f"{field}: Invalid value" in result.stderr and "is immutable" in result.stderr, result.stderr
