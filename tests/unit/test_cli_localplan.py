"""A local node gets the pod's env from the operator's renderers, with cluster values made local."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml
from torchjob_cli import localplan
from torchjob_core import spec

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
