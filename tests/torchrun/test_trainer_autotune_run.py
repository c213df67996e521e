"""`--autotune` measures candidate loader configs in a real run, logs the table and trains with the pick."""

from __future__ import annotations

import re
from pathlib import Path

from torchrun.trainer_procs import LAUNCH, read_summary, running, trainer_env


def test_autotune_picks_a_measured_config(tmp_path: Path) -> None:
    summary_file = tmp_path / "summary.json"
    env = trainer_env(
        TORCHJOB_SUMMARY_FILE=str(summary_file), TORCHJOB_METRICS_PORT="0", TORCHJOB_CPU_LIMIT="2"
    )
    cmd = [LAUNCH, "--standalone", "--nproc-per-node", "1", "--", "torchjob-train", "--autotune"]
    # CPU-bound samples: in-process loading cannot overlap them with the step.
    cmd += [
        "--autotune-batches",
        "6",
        "--sample-cost-us",
        "1000",
        "--batch-size",
        "8",
        "--steps-per-epoch",
        "10",
    ]
    with running(cmd, env, tmp_path / "out.log") as proc:
        rc = proc.wait(timeout=240)
        output = proc.output()
    assert rc == 0, output[-4000:]
    assert "autotune results" in output
    table = re.findall(r"^(\*| ) +(\d+) +(\d+) +(True|False) +([\d.]+) +([\d.]+)$", output, re.MULTILINE)
    assert len(table) >= 3
    best = [row for row in table if row[0] == "*"]
    assert len(best) == 1
    assert float(best[0][4]) == max(float(row[4]) for row in table)
    chosen = read_summary(summary_file)["dataloader"]
    assert (chosen["num_workers"], chosen["prefetch_factor"]) == (int(best[0][1]), int(best[0][2]))
    assert chosen["worker_nice"] == 10  # every candidate keeps the workers' niceness
    assert f"autotune chose num_workers={best[0][1]} prefetch_factor={best[0][2]}" in output


def test_two_ranks_autotune_in_step_and_agree(tmp_path: Path) -> None:
    """Autotune's steps all-reduce: both ranks must run the same candidates and train with one choice."""
    summary_file = tmp_path / "summary.json"
    env = trainer_env(
        TORCHJOB_SUMMARY_FILE=str(summary_file), TORCHJOB_METRICS_PORT="0", TORCHJOB_CPU_LIMIT="2"
    )
    cmd = [LAUNCH, "--standalone", "--nproc-per-node", "2", "--", "torchjob-train", "--autotune"]
    cmd += [
        "--autotune-batches",
        "4",
        "--sample-cost-us",
        "500",
        "--batch-size",
        "8",
        "--steps-per-epoch",
        "6",
    ]
    with running(cmd, env, tmp_path / "out.log") as proc:
        rc = proc.wait(timeout=240)
        output = proc.output()
    assert rc == 0, output[-4000:]
    chosen = re.findall(r"rank (\d)/2 .*autotune chose (num_workers=\d+ prefetch_factor=\d+)", output)
    assert sorted(r for r, _ in chosen) == ["0", "1"], output[-4000:]
    assert len({c for _, c in chosen}) == 1
    assert "with the training step running" in output
    assert read_summary(summary_file)["world_size"] == 2
