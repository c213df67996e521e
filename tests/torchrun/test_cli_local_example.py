"""The README's main job: `torchjob run examples/cpu-gloo-2node.yaml`, end to end with real torchrun
agents, gloo and the real trainer; the CLI scrapes every rank's metrics endpoint while it runs."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from torchrun.cli_procs import CliRun, processes_with_marker

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cpu-gloo-2node.yaml"


@pytest.fixture
def cli_run(tmp_path: Path) -> Iterator[CliRun]:
    run = CliRun(
        [
            str(EXAMPLE),
            "--workdir",
            str(tmp_path / "run"),
            "--plot",
            str(tmp_path / "tp.png"),
            "--scrape-interval",
            "0.2",
        ],
        tmp_path,
    )
    yield run
    run.cleanup()


def test_cpu_gloo_2node_example_runs_locally(tmp_path: Path, cli_run: CliRun) -> None:
    code = cli_run.wait(timeout=420)
    out = cli_run.output()
    assert code == 0, out

    assert "image 'torchjob-trainer:0.1.0' is ignored locally" in out
    urls = re.findall(r"rank (\d) metrics (http://127\.0\.0\.1:\d+/metrics)", out)
    assert [r for r, _ in urls] == ["0", "1", "2", "3"]
    assert len({u for _, u in urls}) == 4  # the two nodes' ranks never share a port
    # Worker lines carry node and global rank: ranks 0-1 on node 0, 2-3 on node 1.
    for node, rank in [(0, 0), (0, 1), (1, 2), (1, 3)]:
        assert f"[node {node} rank {rank}] " in out
    m = re.search(r"metrics scraped while running: \d+ readings from ranks (.*)", out)
    assert m and m.group(1) == "0, 1, 2, 3", out
    table = out[out.index("per-rank summary") :]
    for rank in range(4):
        assert re.search(rf"│\s+{rank} │\s+\d+ │\s+[\d,.]+ │\s+[\d.]+ ms │\s+[\d.]+% │\s+[\d.]+ │", table), (
            table
        )
    assert "cpu-gloo Succeeded" in out

    summary = json.loads((tmp_path / "run" / "summary-node-0.json").read_text())
    assert summary["world_size"] == 4
    assert (tmp_path / "tp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((tmp_path / "run" / "checkpoints").iterdir())
    assert processes_with_marker(cli_run.marker) == []


def test_a_rerun_resumes_and_fresh_trains_again(tmp_path: Path) -> None:
    """The same run dir twice: the second run names the checkpoint it resumes from and, the job being
    finished, says nothing was left to train; --fresh deletes the checkpoints and trains every step."""
    workdir = tmp_path / "run"

    def run(*extra: str) -> str:
        cli = CliRun([str(EXAMPLE), "--workdir", str(workdir), *extra], tmp_path)
        try:
            code = cli.wait(timeout=420)
            out = cli.output()
            assert code == 0, out
            return out
        finally:
            cli.cleanup()

    first = run()
    assert "resuming from" not in first
    assert "per-rank summary" in first
    last = max(p.name for p in (workdir / "checkpoints").iterdir())

    again = run()
    assert f"resuming from {workdir / 'checkpoints' / last} (global step 20); --fresh starts over" in again
    assert "nothing was left to train" in again
    assert "per-rank summary" not in again
    assert "cpu-gloo Succeeded" in again

    fresh = run("--fresh")
    assert "resuming from" not in fresh
    table = fresh[fresh.index("per-rank summary") :]
    assert re.search(r"│\s+0 │\s+20 │", table), table
