"""spec.load: defaults, typed values, resolved values and the /dev/shm sizing rule."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from torchjob_core import quantity, sizing, spec, success_policy


def manifest_of(**spec_fields: Any) -> dict[str, Any]:
    return {
        "apiVersion": "torchjob.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "j"},
        "spec": {"image": "img:1", **spec_fields},
    }


def test_defaults() -> None:
    job = spec.load(manifest_of())
    assert job.metadata == spec.Metadata(name="j", namespace="default")
    assert job.spec == spec.TrainingJobSpec(image="img:1")
    s = job.spec
    assert (s.nodes, s.procs_per_node, s.backend, s.launcher) == (1, "auto", "auto", "torchjob")
    assert s.command == ("torchjob-train",)
    assert s.data_loader == spec.DataLoader("auto", "auto", True, 2, "64Mi")
    assert s.run_policy.retryable_exit_codes == (137, 143)
    assert s.run_policy.clean_pod_policy == "Running"
    assert s.scheduling.effective_gang_scheduler is None
    assert s.elastic is None
    assert s.automount_service_account_token is False
    assert (job.nproc_per_node, job.backend, job.shm_size_limit) == (1, "gloo", "720Mi")


def test_full_manifest() -> None:
    job = spec.load(
        {
            "apiVersion": "torchjob.dev/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {
                "name": "full",
                "namespace": "ml",
                "uid": "u",
                "generation": 3,
                "labels": {"a": "b"},
            },
            "spec": {
                "image": "img:1",
                "imagePullPolicy": "IfNotPresent",
                "command": ["python", "train.py"],
                "args": ["--lr", "0.1"],
                "launcher": "torchrun",
                "nodes": 4,
                "procsPerNode": 2,
                "backend": "gloo",
                "resources": {"requests": {"cpu": 4, "memory": "8Gi"}, "limits": {"memory": "16Gi"}},
                "elastic": {"minNodes": 2, "maxNodes": 8, "maxRestarts": 1, "joinTimeoutSeconds": 900},
                "runPolicy": {
                    "backoffLimit": 5,
                    "backoffSeconds": 30,
                    "retryableExitCodes": [137],
                    "permanentExitCodes": [1, 2],
                    "activeDeadlineSeconds": 3600,
                    "startupDeadlineSeconds": 600,
                    "ttlSecondsAfterFinished": 0,
                    "cleanPodPolicy": "All",
                    "suspend": True,
                    "successPolicy": "Node0",
                },
                "scheduling": {"gang": True, "gangScheduler": "coscheduling", "queue": "team-a"},
            },
            "status": {"phase": "Running"},
        }
    )
    assert job.metadata.generation == 3 and job.metadata.uid == "u" and job.namespace == "ml"
    s = job.spec
    assert s.command == ("python", "train.py") and s.args == ("--lr", "0.1")
    assert s.resources.requests == {"cpu": "4", "memory": "8Gi"}
    assert s.elastic == spec.Elastic(
        min_nodes=2, max_nodes=8, max_restarts=1, last_call_timeout_seconds=5, join_timeout_seconds=900
    )
    assert s.run_policy == spec.RunPolicy(
        5, 30, (137,), (1, 2), 3600, 600, 0, "All", True, success_policy="Node0"
    )
    assert s.scheduling.effective_gang_scheduler == "coscheduling"
    assert s.scheduling.queue == "team-a"


def test_spec_is_frozen() -> None:
    job = spec.load(manifest_of())
    with pytest.raises(AttributeError):
        job.spec.nodes = 3  # type: ignore[misc]


def test_all_errors_are_reported() -> None:
    with pytest.raises(spec.SpecError) as info:
        spec.load(manifest_of(nodes=0, backend="mpi", env=[{"name": "RANK", "value": "0"}]))
    err = info.value
    assert [e.field for e in err.errors] == ["spec.nodes", "spec.backend", "spec.env[0].name"]
    assert err.field == "spec.nodes"
    assert str(err).startswith(
        "spec.nodes: Invalid value: 0: should be greater than or equal to 1; spec.backend"
    )


@pytest.mark.parametrize(
    ("manifest", "field"),
    [
        ([], ""),
        (
            {"apiVersion": "v1", "kind": "TrainingJob", "metadata": {"name": "j"}, "spec": {"image": "i"}},
            "apiVersion",
        ),
        ({"kind": "Pod", "metadata": {"name": "j"}, "spec": {"image": "i"}}, "kind"),
        ({"metadata": {}, "spec": {"image": "i"}}, "metadata.name"),
        ({"metadata": {"name": "j"}}, "spec"),
        ({"metadata": {"name": "j"}, "spec": {"image": "i"}, "extra": 1}, "extra"),
        ({"metadata": {"name": "j", "labels": ["a"]}, "spec": {"image": "i"}}, "metadata.labels"),
        (
            {"metadata": {"name": "j", "annotations": {"a": 1}}, "spec": {"image": "i"}},
            "metadata.annotations.a",
        ),
        ({"metadata": {"name": "j", "namespace": 3}, "spec": {"image": "i"}}, "metadata.namespace"),
        ({"metadata": {"name": "j", "generation": "1"}, "spec": {"image": "i"}}, "metadata.generation"),
        ({"metadata": "j", "spec": {"image": "i"}}, "metadata"),
        ({"metadata": {"name": "j"}, "spec": ["image"]}, "spec"),
    ],
)
def test_envelope_errors(manifest: Any, field: str) -> None:
    with pytest.raises(spec.SpecError) as info:
        spec.load(manifest)
    assert info.value.field == field


def test_gang_scheduler_defaults_to_volcano() -> None:
    assert (
        spec.load(manifest_of(scheduling={"gang": True})).spec.scheduling.effective_gang_scheduler
        == "volcano"
    )


@pytest.mark.parametrize(
    ("fields", "written", "effective"),
    [
        ({}, None, "AllNodes"),
        ({"elastic": {"maxNodes": 2}}, None, "AnyNode"),
        ({"runPolicy": {"successPolicy": "Node0"}}, "Node0", "Node0"),
        ({"elastic": {"maxNodes": 2}, "runPolicy": {"successPolicy": "AllNodes"}}, "AllNodes", "AllNodes"),
    ],
)
def test_success_policy_defaults_per_job_kind(
    fields: dict[str, Any], written: str | None, effective: str
) -> None:
    job = spec.load(manifest_of(**fields))
    assert job.spec.run_policy.success_policy == written  # no schema default: the kind decides
    assert success_policy.SuccessPolicy.of(job).name == effective


def test_success_policy_error_names_the_field_and_the_values() -> None:
    with pytest.raises(spec.SpecError) as info:
        spec.load(manifest_of(runPolicy={"successPolicy": "Master"}))
    assert str(info.value).count("spec.runPolicy.successPolicy") == 1
    assert 'Unsupported value: "Master": supported values: "AllNodes", "Node0", "AnyNode"' in str(info.value)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("2", Decimal(2)),
        (3, Decimal(3)),
        ("1.5", Decimal("1.5")),
        ("4Gi", Decimal(4 * 1024**3)),
        ("64Mi", Decimal(64 * 1024**2)),
        ("1Ki", Decimal(1024)),
        ("1k", Decimal(1000)),
        ("2M", Decimal(2_000_000)),
        ("1e3", Decimal(1000)),
        ("1E6", Decimal(1_000_000)),
        ("100n", Decimal("1E-7")),
    ],
)
def test_quantity_parse(text: str | int, value: Decimal) -> None:
    assert quantity.parse(text) == value


@pytest.mark.parametrize("bad", ["", "two", "1Gb", "Mi", True, "1.2.3", "--1"])
def test_quantity_rejects(bad: Any) -> None:
    assert not quantity.is_quantity(bad)
    with pytest.raises(ValueError, match="regular expression"):
        quantity.parse(bad)


@pytest.mark.parametrize(
    ("n_bytes", "mi", "text"),
    [
        (1, "1Mi", "1"),
        (1024**2, "1Mi", "1Mi"),
        (1024**2 + 1, "2Mi", str(1024**2 + 1)),
        (5 * 1024**3, "5120Mi", "5Gi"),
    ],
)
def test_quantity_formatting(n_bytes: int, mi: str, text: str) -> None:
    assert quantity.format_mi(n_bytes) == mi
    assert quantity.format_bytes(n_bytes) == text


@pytest.mark.parametrize(
    ("fields", "shm"),
    [
        ({}, "720Mi"),  # (4 workers (no CPU set) x prefetch 2 + 1) x 64Mi x 1 proc / 80%
        ({"dataLoader": {"numWorkers": 0}}, "256Mi"),  # floor
        ({"dataLoader": {"numWorkers": 8, "prefetchFactor": 4, "batchBytesHint": "10Mi"}}, "413Mi"),
        (
            {"procsPerNode": 4, "dataLoader": {"numWorkers": 2, "batchBytesHint": "100M"}},
            "2385Mi",
        ),  # 5 x 100M x 4 / 80%, rounded up to Mi
        ({"resources": {"limits": {"cpu": "8"}}, "procsPerNode": 2}, "2080Mi"),  # 8 CPUs / 2 -> 6 workers
        ({"resources": {"requests": {"cpu": "500m"}}}, "256Mi"),  # under 1 CPU: in-process, the floor
        ({"resources": {"requests": {"cpu": "16"}, "limits": {"cpu": "4"}}}, "1040Mi"),  # limit, not request
        ({"resources": {"gpusPerNode": 8, "limits": {"cpu": "64"}}}, "16000Mi"),  # 8 procs x 12 workers
        ({"sharedMemory": {"sizeLimit": "1G"}, "procsPerNode": 8}, "1G"),  # override wins
    ],
)
def test_shm_sizing(fields: dict[str, Any], shm: str) -> None:
    assert spec.load(manifest_of(**fields)).shm_size_limit == shm


def test_worker_estimate() -> None:
    job = spec.load(manifest_of(procsPerNode=3, resources={"limits": {"cpu": "10"}}))
    assert sizing.worker_estimate(job.spec) == 5  # 10 CPUs / 3 procs, 1.5 workers per CPU, floored
    assert sizing.cpu_cores(job.spec) == 10.0


@pytest.mark.parametrize(
    ("resources", "shm", "ok"),
    [
        ({"limits": {"memory": "720Mi"}}, None, True),  # no request: the 720Mi shm fits in 720Mi
        ({"requests": {"memory": "1Gi"}, "limits": {"memory": "1744Mi"}}, None, True),  # exactly enough
        ({"requests": {"memory": "1025Mi"}, "limits": {"memory": "1744Mi"}}, None, False),
        ({"limits": {"memory": "1Gi"}}, "2Gi", False),
        ({"requests": {"memory": "8Gi"}}, "64Gi", True),  # no limit: nothing to exceed
    ],
)
def test_memory_limit_must_hold_shm(resources: dict[str, Any], shm: str | None, ok: bool) -> None:
    fields: dict[str, Any] = {"resources": resources}
    if shm is not None:
        fields["sharedMemory"] = {"sizeLimit": shm}
    if ok:
        spec.load(manifest_of(**fields))
        return
    with pytest.raises(spec.SpecError) as info:
        spec.load(manifest_of(**fields))
    assert info.value.field == "spec.resources.limits.memory"
    assert "count against the memory limit" in info.value.message


def test_memory_error_names_the_numbers() -> None:
    # Admission's floor (1Gi + 256Mi) passes; the derived /dev/shm (720Mi) is load's to check.
    with pytest.raises(spec.SpecError) as info:
        spec.load(manifest_of(resources={"requests": {"memory": "1Gi"}, "limits": {"memory": "1536Mi"}}))
    assert "requests.memory (1Gi) + /dev/shm sizeLimit (720Mi) = 1744Mi" in info.value.message


@pytest.mark.parametrize("name", ["PET_X", "TORCHJOB_Y", "MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE",
                                  "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK"])  # fmt: skip
def test_reserved_env_names(name: str) -> None:
    assert spec.is_reserved_env(name)


@pytest.mark.parametrize("name", ["PATH", "NCCL_DEBUG", "MASTER", "PET", "RANKING", "OMP_NUM_THREADS"])
def test_free_env_names(name: str) -> None:
    assert not spec.is_reserved_env(name)


@pytest.mark.parametrize(
    ("value", "text"),
    [(Decimal(24), "24"), (Decimal("1.5"), "1500m"), (Decimal("0.0005"), "0.0005"), (Decimal("3.000"), "3")],
)
def test_quantity_format_decimal(value: Decimal, text: str) -> None:
    assert quantity.format_decimal(value) == text
    assert quantity.parse(text) == value
