"""A local node runs the rendered pod's container: its command and env, with cluster values made local."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml
from torchjob_cli import localplan
from torchjob_core import spec
from torchjob_core.render import pods

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cpu-gloo-2node.yaml"


def example_job() -> spec.TrainingJob:
    return spec.load(yaml.safe_load(EXAMPLE.read_text()))


def test_node_env_is_the_pods_env_made_local(tmp_path: Path) -> None:
    job = example_job()
    ports = localplan.Ports(master=30001, rdzv=30002, metrics_base=31000)
    shell = {"PATH": "/usr/bin", "HOME": "/root", "PET_NNODES": "9", "TORCHJOB_BACKEND": "nccl"}
    env = localplan.node_env(job, 1, ports, tmp_path, attempt=0, environ=shell)

    assert env["PET_NNODES"] == "2" and env["PET_NPROC_PER_NODE"] == "2" and env["PET_NODE_RANK"] == "1"
    assert (env["PET_MASTER_ADDR"], env["PET_MASTER_PORT"]) == ("127.0.0.1", "30001")
    assert env["TORCHJOB_BACKEND"] == "gloo"  # the shell's TORCHJOB_* never leaks in
    assert env["TORCHJOB_CPU_LIMIT"] == "2"  # limits.cpu as a plain value, not a downward-API ref
    assert env["TORCHJOB_METRICS_PORT"] == "31002"  # node 1's ranks: 31002, 31003
    assert env["TORCHJOB_CHECKPOINT_DIR"] == str(tmp_path / "checkpoints")
    assert env["TORCHJOB_SUMMARY_FILE"] == str(tmp_path / "summary-node-1.json")
    assert env["PET_LOG_LINE_PREFIX_TEMPLATE"] == "[node 1 rank ${rank}] "
    assert env["PATH"].startswith(str(Path(sys.executable).parent))
    assert env["HOME"] == "/root"


def test_metrics_urls_are_node_major_and_distinct() -> None:
    job = example_job()
    urls = localplan.metrics_urls(job, localplan.Ports(1, 2, 31000))
    assert urls == {r: f"http://127.0.0.1:{31000 + r}/metrics" for r in range(4)}
    assert localplan.metrics_urls(job, localplan.Ports(1, 2, 0)) == {}


def test_metrics_base_moves_off_a_busy_port() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        base = localplan.metrics_base(busy, 2)
    assert base != busy and base > 0
    assert localplan.metrics_base(0, 4) == 0


def test_launcher_is_the_pods_command_from_this_environment(tmp_path: Path) -> None:
    job = example_job()
    argv = localplan.launcher_argv(job, tmp_path)  # an empty bin dir: falls back to python -m
    assert argv[:3] == [sys.executable, "-m", "torchjob_trainer.launch"]
    assert argv[3:6] == ["--", "torchjob-train", "--model"]
    (tmp_path / "torchjob-launch").touch()
    assert localplan.launcher_argv(job, tmp_path)[0] == str(tmp_path / "torchjob-launch")


def test_downward_api_refs_become_local_values() -> None:
    env = localplan.resolve_env(
        [
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            {"name": "PLAIN", "value": "x"},
        ],
        pod_name="j-node-0-r0",
        namespace="team",
    )
    assert env == {"POD": "j-node-0-r0", "NS": "team", "IP": "127.0.0.1", "PLAIN": "x"}


def test_restart_policy_comes_from_run_policy() -> None:
    p = localplan.policy(example_job())
    assert p.backoff_limit == 2 and 143 in p.retryable_exit_codes


def test_presets_reach_local_ranks_and_the_users_env_wins(tmp_path: Path) -> None:
    manifest = yaml.safe_load(EXAMPLE.read_text())
    manifest["spec"].update(debug=True, networkInterface="lo", env=[{"name": "LOGLEVEL", "value": "WARNING"}])
    ports = localplan.Ports(master=30001, rdzv=30002, metrics_base=0)
    env = localplan.node_env(spec.load(manifest), 0, ports, tmp_path, attempt=0, environ={})
    assert (env["TORCH_DISTRIBUTED_DEBUG"], env["GLOO_SOCKET_IFNAME"], env["LOGLEVEL"]) == (
        "INFO",
        "lo",
        "WARNING",
    )


def local_manifest(**spec_fields: object) -> dict[str, object]:
    manifest = yaml.safe_load(EXAMPLE.read_text())
    manifest["spec"].update(spec_fields)
    return manifest


@pytest.mark.parametrize("elastic", [None, {"minNodes": 1, "maxNodes": 2}])
def test_node_env_is_the_rendered_pods_env_in_its_order(tmp_path: Path, elastic: object) -> None:
    """Every pod env entry reaches the process, in the pod's order, with only the local substitutions."""
    job = spec.load(local_manifest(elastic=elastic) if elastic else local_manifest())
    ports = localplan.Ports(master=30001, rdzv=30002, metrics_base=31000)
    container = localplan.trainer_container(pods.render_pod(job, 1, 0))
    env = localplan.node_env(job, 1, ports, tmp_path, attempt=0, environ={})
    substituted = localplan.local_values(job, 1, ports, tmp_path)

    pod_names = [e["name"] for e in container["env"]]
    assert [name for name in env if name in pod_names] == pod_names
    for entry in container["env"]:
        want = substituted.get(entry["name"], entry.get("value"))
        if want is not None:
            assert env[entry["name"]] == want, entry["name"]
    assert env["TORCHJOB_CPU_LIMIT"] == "2"  # the container's limits.cpu, as the downward API gives it
    endpoint = env.get("PET_RDZV_ENDPOINT") or f"{env['PET_MASTER_ADDR']}:{env['PET_MASTER_PORT']}"
    assert endpoint == ("127.0.0.1:30002" if elastic else "127.0.0.1:30001")
    # The node env names the same local endpoint torchrun is given.
    assert f"{env['TORCHJOB_MASTER_ADDR']}:{env['TORCHJOB_MASTER_PORT']}" == endpoint
    assert (env["TORCHJOB_NODE_INDEX"], env["TORCHJOB_NUM_NODES"]) == ("1", "2")


def test_template_env_and_references_resolve_as_the_kubelet_does(tmp_path: Path) -> None:
    template = {
        "spec": {"containers": [{"name": "trainer", "env": [{"name": "FROM_TEMPLATE", "value": "t"}]}]}
    }
    user_env = [
        {"name": "RUN", "value": "$(TORCHJOB_JOB_NAME)-$(FROM_TEMPLATE)"},
        {"name": "OUT", "value": "$(TORCHJOB_CHECKPOINT_DIR)/out"},
        {"name": "LATER", "value": "$(DEFINED_BELOW) $$(RUN) $(HOME)"},
        {"name": "DEFINED_BELOW", "value": "x"},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    job = spec.load(local_manifest(template=template, env=user_env))
    ports = localplan.Ports(master=30001, rdzv=30002, metrics_base=0)
    env = localplan.node_env(job, 0, ports, tmp_path, attempt=3, environ={"HOME": "/root"})
    assert env["FROM_TEMPLATE"] == "t"  # the template's env reaches a local run as it reaches the pod
    assert env["RUN"] == "cpu-gloo-t"
    assert env["OUT"] == f"{tmp_path}/checkpoints/out"  # the substituted value, not the pod's path
    # Only earlier entries of the pod's own env expand; `$$` escapes; the shell's HOME is not the pod's.
    assert env["LATER"] == "$(DEFINED_BELOW) $(RUN) $(HOME)"
    assert env["POD"] == "cpu-gloo-node-0-r3"


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("$(A)/$(A)", "1/1"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(A)", "$(A)"),
        ("$$$(A)", "$1"),
        ("a$b$", "a$b$"),
        ("$(A", "$(A"),
        ("$()", "$()"),
    ],
)
def test_expand_follows_kubernetes(value: str, want: str) -> None:
    assert localplan.expand(value, {"A": "1"}) == want


def test_resource_refs_round_up_in_divisor_units() -> None:
    def ref(resource: str, divisor: str | None = None) -> dict[str, object]:
        field: dict[str, object] = {"resource": resource, **({"divisor": divisor} if divisor else {})}
        return {"name": resource, "valueFrom": {"resourceFieldRef": field}}

    resources = {"limits": {"cpu": "1500m", "memory": "3Gi"}, "requests": {"cpu": "250m"}}
    env = localplan.resolve_env(
        [ref("limits.cpu"), ref("requests.cpu", "1m"), ref("limits.memory", "1Mi"), ref("requests.memory")],
        pod_name="p",
        namespace="n",
        resources=resources,
    )
    assert env == {"limits.cpu": "2", "requests.cpu": "250", "limits.memory": "3072"}
    no_limit = localplan.resolve_env([ref("limits.cpu")], pod_name="p", namespace="n", resources={})
    assert no_limit == {"limits.cpu": str(os.cpu_count() or 1)}  # the node's allocatable: this host


def test_args_expand_from_each_nodes_env(tmp_path: Path) -> None:
    job = spec.load(local_manifest(args=["--tag", "$(TORCHJOB_JOB_NAME)-$(PET_NODE_RANK)", "$$(KEEP)"]))
    ports = localplan.Ports(master=30001, rdzv=30002, metrics_base=0)
    plans = localplan.node_plans(job, ports, tmp_path, attempt=0, environ={})
    assert [p.argv[-3:] for p in plans] == [
        ["--tag", "cpu-gloo-0", "$(KEEP)"],
        ["--tag", "cpu-gloo-1", "$(KEEP)"],
    ]


@pytest.mark.parametrize("keep", [True, False])
def test_a_new_run_clears_logs_and_keeps_checkpoints_unless_fresh(tmp_path: Path, keep: bool) -> None:
    localplan.fresh_run_dir(tmp_path)
    saved = localplan.checkpoint_dir(tmp_path) / "ckpt-000000020.pt"
    saved.write_bytes(b"x")
    (tmp_path / "node-0.log").write_text("old run")
    localplan.fresh_run_dir(tmp_path, keep_checkpoints=keep)
    assert not (tmp_path / "node-0.log").exists()
    assert saved.exists() is keep
    assert localplan.checkpoint_dir(tmp_path).is_dir()
