"""`torchjob run` supervising real torchrun agents (a torch-free fake worker keeps each run small):
a crashing rank, a restart per run policy, Ctrl-C, and bad manifests. No process may outlive a test."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from torchrun.cli_procs import CliRun, fake_job, processes_with_marker, write_manifest


@pytest.fixture
def cli_runs(tmp_path: Path) -> Iterator[list[CliRun]]:
    runs: list[CliRun] = []
    yield runs
    for run in runs:
        run.cleanup()


def start(cli_runs: list[CliRun], tmp_path: Path, doc: dict[str, object], *extra: str) -> CliRun:
    manifest = write_manifest(tmp_path, doc)
    run = CliRun([str(manifest), "--workdir", str(tmp_path / "run"), "--grace", "5", *extra], tmp_path)
    cli_runs.append(run)
    return run


def test_crashing_rank_stops_the_gang_with_a_clear_message(tmp_path: Path, cli_runs: list[CliRun]) -> None:
    doc = fake_job("crash", worker_args=["--crash-rank", "1"], runPolicy={"backoffLimit": 3})
    run = start(cli_runs, tmp_path, doc)

    code = run.wait()
    out = run.output()
    # A Python exception is exit 1: permanent by default, so no restart despite backoffLimit 3.
    assert code == 1, out
    assert "[node 1 rank 1] " in out and "crashed on purpose" in out
    assert "crash Failed: node 1 exited with code 1 (permanent): not restarting" in out
    assert "restarting the gang" not in out
    assert processes_with_marker(run.marker) == []


def test_retryable_exit_restarts_the_gang_per_run_policy(tmp_path: Path, cli_runs: list[CliRun]) -> None:
    marker = tmp_path / "failed-once"
    doc = fake_job(
        "retry",
        worker_args=["--crash-rank", "0", "--exit-code", "7", "--once-marker", str(marker)],
        runPolicy={"backoffLimit": 1, "backoffSeconds": 0, "retryableExitCodes": [7]},
    )
    run = start(cli_runs, tmp_path, doc)

    code = run.wait()
    out = run.output()
    assert code == 0, out
    assert "node 0 exited with code 7 (retryable): restarting the gang" in out
    assert "retry Succeeded after 1 restart(s)" in out
    assert out.count("[node 0 rank 0] fake worker rank 0 done") == 1  # only on the second attempt
    assert processes_with_marker(run.marker) == []


def test_backoff_limit_ends_retries(tmp_path: Path, cli_runs: list[CliRun]) -> None:
    doc = fake_job(
        "limit",
        nodes=1,
        worker_args=["--crash-rank", "0", "--exit-code", "143"],
        runPolicy={"backoffLimit": 1, "backoffSeconds": 0},
    )
    run = start(cli_runs, tmp_path, doc)

    code = run.wait()
    out = run.output()
    assert code == 143, out
    assert "backoffLimit 1 reached after 1 restart(s)" in out


def agent_of_node(marker: str, node: int) -> int:
    """The pid (= session id) of node `node`'s torchrun agent in the run carrying `marker`."""
    for pid in processes_with_marker(marker):
        try:
            leader = os.getsid(pid) == pid
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if leader and any(e.endswith(f"summary-node-{node}.json".encode()) for e in environ):
            return pid
    raise AssertionError(f"no agent for node {node}")


def test_an_elastic_node_killed_is_replaced_alone(tmp_path: Path, cli_runs: list[CliRun]) -> None:
    """Real torchrun agents with c10d: node 1's agent dies, node 0's keeps running, and node 1 starts
    again alone and rejoins the rendezvous, as the operator replaces a lost pod."""
    go = tmp_path / "go"  # workers wait for it, so node 0's cannot finish before the replacement joins
    doc = fake_job(
        "elastic",
        worker_args=["--wait-for", str(go)],
        elastic={"minNodes": 1, "maxNodes": 2},
        runPolicy={"backoffLimit": 1, "backoffSeconds": 0},
    )
    run = start(cli_runs, tmp_path, doc)
    run.wait_for_output("fake worker rank 1/2")
    os.killpg(agent_of_node(run.marker, 1), signal.SIGKILL)
    run.wait_for_output("replacing node 1 alone")
    # The replacement joins node 0's rendezvous: node 0's agent restarts its worker into a new round of 2.
    deadline = time.monotonic() + 120
    while run.output().count(" up") < 4:
        assert time.monotonic() < deadline and run.proc.poll() is None, run.output()
        time.sleep(0.1)
    go.touch()

    code = run.wait(timeout=240)
    out = run.output()
    assert code == 0, out
    assert "node 1 exited with code 137 (retryable): replacing node 1 alone in 0s" in out
    assert "restarting the gang" not in out
    assert "elastic Succeeded after 1 restart(s)" in out
    assert out.count("/2 pid") == 4 and "/1 pid" not in out  # both rounds had both nodes
    node0 = (tmp_path / "run" / "node-0.log").read_text()
    assert node0.count("--- ") == 1, node0  # node 0's agent ran throughout
    assert "--- node 1 replaced (restart 1)" in (tmp_path / "run" / "node-1.log").read_text()
    assert processes_with_marker(run.marker) == []


def test_sigint_stops_every_process(tmp_path: Path, cli_runs: list[CliRun]) -> None:
    doc = fake_job("hang", procs=2, worker_args=["--hang"])
    run = start(cli_runs, tmp_path, doc)
    for rank in range(4):
        run.wait_for_output(f"fake worker rank {rank} hanging")
    # The CLI, 2 agents and 4 workers (torchrun may add helpers): all carry the marker.
    assert len(processes_with_marker(run.marker)) >= 7

    run.proc.send_signal(signal.SIGINT)
    code = run.wait(timeout=60)

    out = run.output()
    assert code == 128 + signal.SIGINT, out
    assert "interrupted: stopping every node" in out
    assert "hang interrupted: every process stopped" in out
    assert processes_with_marker(run.marker) == []


def test_sigterm_leaves_no_worker_behind_in_its_own_session(tmp_path: Path, cli_runs: list[CliRun]) -> None:
    """torchrun starts every worker in a session of its own. One that ignores SIGTERM outlives the
    grace, and its agent's SIGKILL orphans it; the CLI still finds and kills it (its marker)."""
    doc = fake_job("stubborn", procs=2, worker_args=["--hang", "--ignore-sigterm"])
    run = start(cli_runs, tmp_path, doc, "--grace", "1")
    for rank in range(4):
        run.wait_for_output(f"fake worker rank {rank} hanging")
    workers = [int(pid) for pid in re.findall(r"fake worker rank \d+/\d+ pid (\d+) up", run.output())]
    assert len(workers) == 4 and all(os.getsid(pid) == pid for pid in workers)  # each leads its own session

    run.proc.send_signal(signal.SIGTERM)
    code = run.wait(timeout=60)

    out = run.output()
    assert code == 128 + signal.SIGTERM, out
    assert "stubborn interrupted: every process stopped" in out
    assert processes_with_marker(run.marker) == []


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"nodes": 0}, "spec.nodes"),
        ({"image": None}, "spec.image"),
        ({"env": [{"name": "RANK", "value": "3"}]}, "spec.env[0].name"),
    ],
)
def test_invalid_manifest_fails_before_anything_starts(
    tmp_path: Path, cli_runs: list[CliRun], patch: dict[str, object], field: str
) -> None:
    doc = fake_job("bad", worker_args=[])
    spec = doc["spec"]
    assert isinstance(spec, dict)
    for key, value in patch.items():
        if value is None:
            spec.pop(key)
        else:
            spec[key] = value
    run = start(cli_runs, tmp_path, doc)

    assert run.wait() == 2
    out = run.output()
    assert f"  {field}: " in out
    assert not (tmp_path / "run").exists()
