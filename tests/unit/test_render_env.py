"""torchrun_env, node_env and trainer_env: the env contract of docs/contracts.md."""

from __future__ import annotations

from typing import Any

import pytest
from torchjob_core import spec
from torchjob_core.render import env


def job_of(**spec_fields: Any) -> spec.TrainingJob:
    return spec.load(
        {
            "apiVersion": "torchjob.dev/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": "mnist", "namespace": "ml"},
            "spec": {"image": "img:1", **spec_fields},
        }
    )


def as_dict(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in items}


@pytest.mark.parametrize(
    ("fields", "rank", "kwargs", "expected"),
    [
        (
            {"nodes": 3},
            2,
            {"master_addr": "m.svc"},
            {
                "PET_NNODES": "3",
                "PET_NPROC_PER_NODE": "1",
                "PET_NODE_RANK": "2",
                "PET_MASTER_ADDR": "m.svc",
                "PET_MASTER_PORT": "29500",
            },
        ),
        (
            {"nodes": 1, "procsPerNode": 4},
            0,
            {"master_addr": "127.0.0.1", "master_port": 31000},
            {
                "PET_NNODES": "1",
                "PET_NPROC_PER_NODE": "4",
                "PET_NODE_RANK": "0",
                "PET_MASTER_ADDR": "127.0.0.1",
                "PET_MASTER_PORT": "31000",
            },
        ),
        (
            {"nodes": 2, "resources": {"gpusPerNode": 8}},
            1,
            {"master_addr": "m"},
            {
                "PET_NNODES": "2",
                "PET_NPROC_PER_NODE": "8",
                "PET_NODE_RANK": "1",
                "PET_MASTER_ADDR": "m",
                "PET_MASTER_PORT": "29500",
            },
        ),
        (
            {"nodes": 2, "elastic": {"minNodes": 1, "maxNodes": 4, "maxRestarts": 5}},
            1,
            {"master_addr": "m.svc"},
            {
                "PET_NNODES": "1:4",
                "PET_NPROC_PER_NODE": "1",
                "PET_RDZV_BACKEND": "c10d",
                "PET_RDZV_ENDPOINT": "m.svc:29400",
                "PET_RDZV_ID": "mnist",
                "PET_RDZV_CONF": "is_host=0,last_call_timeout=5,join_timeout=600",
                "PET_MAX_RESTARTS": "5",
                "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
            },
        ),
        (
            {"nodes": 2, "elastic": {"maxNodes": 2}},
            0,
            {"master_addr": "localhost", "rdzv_port": 30000},
            {
                "PET_NNODES": "1:2",
                "PET_NPROC_PER_NODE": "1",
                "PET_RDZV_BACKEND": "c10d",
                "PET_RDZV_ENDPOINT": "localhost:30000",
                "PET_RDZV_ID": "mnist",
                "PET_RDZV_CONF": "is_host=1,last_call_timeout=5,join_timeout=600",
                "PET_MAX_RESTARTS": "3",
                "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
            },
        ),
    ],
    ids=["static", "local-port", "gpus-auto-procs", "elastic", "elastic-port"],
)
def test_torchrun_env(
    fields: dict[str, Any], rank: int, kwargs: dict[str, Any], expected: dict[str, str]
) -> None:
    rendered = env.torchrun_env(job_of(**fields), rank, **kwargs)
    assert as_dict(rendered) == expected
    assert all(e["name"].startswith(("PET_", "TORCH_")) for e in rendered)


def test_trainer_env_defaults_with_downward_api_cpu() -> None:
    assert env.trainer_env(job_of()) == [
        {"name": "TORCHJOB_BACKEND", "value": "gloo"},
        {"name": "TORCHJOB_NUM_WORKERS", "value": "auto"},
        {"name": "TORCHJOB_PIN_MEMORY", "value": "auto"},
        {"name": "TORCHJOB_PERSISTENT_WORKERS", "value": "true"},
        {"name": "TORCHJOB_PREFETCH_FACTOR", "value": "2"},
        {"name": "TORCHJOB_AUTOTUNE", "value": "false"},
        {"name": "TORCHJOB_AUTOTUNE_SECONDS", "value": "60"},
        {
            "name": "TORCHJOB_CPU_LIMIT",
            "valueFrom": {
                "resourceFieldRef": {"containerName": "trainer", "resource": "limits.cpu", "divisor": "1"}
            },
        },
        {"name": "TORCHJOB_METRICS_PORT", "value": "9400"},
        {"name": "TORCHJOB_CHECKPOINT_DIR", "value": "/checkpoints"},
    ]


def test_trainer_env_settings_and_plain_cpu_limit() -> None:
    job = job_of(
        resources={"gpusPerNode": 1, "gpuMemoryFraction": 0.5},
        dataLoader={
            "numWorkers": 6,
            "pinMemory": "false",
            "persistentWorkers": False,
            "prefetchFactor": 4,
            "autotune": True,
            "autotuneSeconds": 20,
        },
        metrics={"port": 0},
        checkpoint={"dir": "/ckpt"},
    )
    assert as_dict(env.trainer_env(job, cpu_limit="3")) == {
        "TORCHJOB_BACKEND": "nccl",
        "TORCHJOB_NUM_WORKERS": "6",
        "TORCHJOB_PIN_MEMORY": "false",
        "TORCHJOB_PERSISTENT_WORKERS": "false",
        "TORCHJOB_PREFETCH_FACTOR": "4",
        "TORCHJOB_AUTOTUNE": "true",
        "TORCHJOB_AUTOTUNE_SECONDS": "20",
        "TORCHJOB_CPU_LIMIT": "3",
        "TORCHJOB_METRICS_PORT": "0",
        "TORCHJOB_CHECKPOINT_DIR": "/ckpt",
        "TORCHJOB_CUDA_MEMORY_FRACTION": "0.5",
    }


@pytest.mark.parametrize(
    ("elastic", "rank", "expected"),
    [
        ({"maxNodes": 4, "lastCallTimeoutSeconds": 1}, 0, "is_host=1,last_call_timeout=1,join_timeout=600"),
        (
            {"maxNodes": 4, "lastCallTimeoutSeconds": 60, "joinTimeoutSeconds": 1800},
            3,
            "is_host=0,last_call_timeout=60,join_timeout=1800",
        ),
    ],
    ids=["short-last-call", "both-set"],
)
def test_rdzv_conf_carries_the_elastic_timeouts(elastic: dict[str, Any], rank: int, expected: str) -> None:
    rendered = as_dict(env.torchrun_env(job_of(nodes=4, elastic=elastic), rank, master_addr="m"))
    assert rendered["PET_RDZV_CONF"] == expected


@pytest.mark.parametrize(
    ("fields", "kwargs", "addr", "port"),
    [
        ({"nodes": 3}, {}, "m.svc", "29500"),
        ({"nodes": 3}, {"master_port": 31000, "rdzv_port": 32000}, "m.svc", "31000"),
        ({"nodes": 3, "elastic": {"maxNodes": 4}}, {}, "m.svc", "29400"),
        (
            {"nodes": 3, "elastic": {"maxNodes": 4}},
            {"master_port": 31000, "rdzv_port": 32000},
            "m.svc",
            "32000",
        ),
    ],
    ids=["static", "static-port", "elastic", "elastic-port"],
)
def test_node_env_is_the_nodes_identity_and_rendezvous_endpoint(
    fields: dict[str, Any], kwargs: dict[str, Any], addr: str, port: str
) -> None:
    job = job_of(**fields)
    assert env.node_env(job, 2, master_addr=addr, **kwargs) == [
        {"name": "TORCHJOB_JOB_NAME", "value": "mnist"},
        {"name": "TORCHJOB_NAMESPACE", "value": "ml"},
        {"name": "TORCHJOB_NODE_INDEX", "value": "2"},
        {"name": "TORCHJOB_NUM_NODES", "value": "3"},
        {"name": "TORCHJOB_MASTER_ADDR", "value": addr},
        {"name": "TORCHJOB_MASTER_PORT", "value": port},
    ]
    # The same endpoint torchrun is given.
    pet = as_dict(env.torchrun_env(job, 2, master_addr=addr, **kwargs))
    assert pet.get("PET_RDZV_ENDPOINT", f"{pet.get('PET_MASTER_ADDR')}:{pet.get('PET_MASTER_PORT')}") == (
        f"{addr}:{port}"
    )


def test_every_rendered_name_is_reserved_for_users() -> None:
    job = job_of(elastic={"maxNodes": 2}, nodes=2, resources={"gpusPerNode": 1, "gpuMemoryFraction": 0.9})
    rendered = env.torchrun_env(job, 0, master_addr="m") + env.node_env(job, 0, master_addr="m")
    names = [e["name"] for e in rendered + env.trainer_env(job)]
    assert all(spec.is_reserved_env(n) for n in names)
    moved = env.termination_log_env({"terminationMessagePath": "/tmp/why"})
    assert all(spec.is_reserved_env(e["name"]) for e in moved)
    assert {e["name"] for e in env.trainer_env(job) + moved} == set(env.TRAINER_ENV_NAMES)
