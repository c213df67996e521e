"""Two torchrun agents (two "pods") doing a c10d rendezvous over 127.0.0.1, configured by PET_* env."""

from __future__ import annotations

from pathlib import Path

from harness.ports import free_port
from torchrun.trainer_procs import (
    LAUNCH,
    read_summary,
    running,
    samples,
    scrape_all_while_training,
    two_node_env,
)


def test_two_agents_rendezvous_and_train(tmp_path: Path) -> None:
    rdzv = free_port()
    metrics = [free_port(), free_port()]
    summary_file = tmp_path / "summary.json"
    args = ["--steps-per-epoch", "100", "--epochs", "2", "--batch-size", "16", "--sample-cost-us", "600"]

    def env(node: int) -> dict[str, str]:
        # What the operator renders for each pod (rendezvous port differs from 29400 to stay parallel-safe).
        return two_node_env(
            rdzv,
            "two-nodes",
            TORCHJOB_JOB_NAME="pair",
            TORCHJOB_METRICS_PORT=str(metrics[node]),
            TORCHJOB_NUM_WORKERS="1",
            TORCHJOB_SUMMARY_FILE=str(summary_file),
        )

    cmd = [LAUNCH, "--", "torchjob-train", *args]
    with (
        running(cmd, env(0), tmp_path / "node0.log") as node0,
        running(cmd, env(1), tmp_path / "node1.log") as node1,
    ):
        by_port = scrape_all_while_training({metrics[0]: node0, metrics[1]: node1})
        scraped = [by_port[metrics[0]], by_port[metrics[1]]]
        rcs = [node0.wait(timeout=240), node1.wait(timeout=240)]
        outputs = [node0.output(), node1.output()]
    assert rcs == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]

    label_sets = [samples(text)["torchjob_trainer_samples_total"][0] for text in scraped]
    assert sorted((lbl["rank"], lbl["node_rank"]) for lbl in label_sets) == [("0", "0"), ("1", "1")]
    assert all(lbl["local_rank"] == "0" and lbl["job"] == "pair" for lbl in label_sets)

    summary = read_summary(summary_file)  # written by whichever agent hosts rank 0
    assert summary["world_size"] == 2
    assert summary["outcome"] == "completed"
    assert [r["steps"] for r in summary["ranks"]] == [200, 200]
