"""`torchjob-launch --standalone --nproc-per-node 2`: DDP on gloo, per-rank metrics scraped while it runs."""

from __future__ import annotations

from pathlib import Path

from harness.ports import free_port
from torchrun.trainer_procs import (
    LAUNCH,
    progress_lines,
    read_summary,
    running,
    samples,
    scrape_all_while_training,
    startup_phases,
    trainer_env,
)


def test_two_processes_train_and_serve_metrics(tmp_path: Path) -> None:
    port = free_port(span=2)
    summary_file = tmp_path / "summary.json"
    env = trainer_env(
        TORCHJOB_METRICS_PORT=str(port),
        TORCHJOB_JOB_NAME="standalone",
        TORCHJOB_SUMMARY_FILE=str(summary_file),
        TORCHJOB_NUM_WORKERS="1",
    )
    cmd = [LAUNCH, "--standalone", "--nproc-per-node", "2", "--", "torchjob-train"]
    cmd += ["--steps-per-epoch", "100", "--epochs", "2", "--batch-size", "16", "--sample-cost-us", "300"]
    cmd += ["--log-every", "25", "--profile-steps", "3:5", "--profile-dir", str(tmp_path / "prof")]
    with running(cmd, env, tmp_path / "out.log") as proc:
        by_port = scrape_all_while_training({port: proc, port + 1: proc})
        scraped = [by_port[port], by_port[port + 1]]
        rc = proc.wait(timeout=240)
        output = proc.output()
    assert rc == 0, output[-4000:]

    for local_rank, text in enumerate(scraped):
        got = samples(text)
        labels, value = got["torchjob_trainer_samples_total"]
        assert labels == {
            "job": "standalone",
            "rank": str(local_rank),
            "local_rank": str(local_rank),
            "node_rank": "0",
        }
        assert value > 0
        assert got["torchjob_trainer_dataloader_workers"][1] == 1
        assert got["torchjob_trainer_step_duration_seconds_count"][1] > 0
        assert "torchjob_trainer_data_wait_seconds_total" in got
        # Start-up, as the log line gives it: contiguous phases that add up to process start -> first step.
        phases = startup_phases(text)
        assert {"rendezvous", "loader", "first_step"} <= set(phases), phases
        total = got["torchjob_trainer_startup_seconds"][1]
        assert total > 0
        assert abs(sum(phases.values()) - total) < 0.01 * len(phases), (phases, total)

    summary = read_summary(summary_file)
    assert summary["outcome"] == "completed"
    assert summary["world_size"] == 2
    assert summary["global_step"] == summary["total_steps"] == 200
    assert [r["samples"] for r in summary["ranks"]] == [200 * 16, 200 * 16]
    assert 0 <= summary["data_wait_ratio"] <= 1

    progress = progress_lines(output)
    assert [p["step"] for p in progress][-1] == 200
    assert {"step", "total_steps", "epoch", "epochs", "loss", "samples_per_second", "data_wait_ratio"} <= set(
        progress[0]
    )
    assert "rank 1/2 local 1 node 0" in output
    assert {p.name for p in (tmp_path / "prof").iterdir()} == {"trace-rank0.json", "trace-rank1.json"}
