"""Two torchrun agents (two "pods") doing a c10d rendezvous over 127.0.0.1, configured by PET_* env."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness.polling import eventually
from harness.ports import free_port
from torchjob_core import constants
from torchrun.trainer_procs import (
    LAUNCH,
    read_summary,
    running,
    samples,
    scrape_all_while_training,
    trainer_env,
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


def _late_host_env(rendezvous: str, rdzv: int, node: int) -> dict[str, str]:
    """What the operator renders for an elastic job (c10d, node 0 `is_host=1`) or a fixed-size one
    (static: node ranks and node 0's address), on 127.0.0.1."""
    quiet = {"TORCHJOB_NUM_WORKERS": "0", "TORCHJOB_METRICS_PORT": "0"}
    if rendezvous == "c10d":
        return two_node_env(rdzv, "late-host", PET_RDZV_CONF=f"is_host={1 if node == 0 else 0}", **quiet)
    static = {"PET_NODE_RANK": str(node), "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(rdzv)}
    return trainer_env(PET_NNODES="2", PET_NPROC_PER_NODE="1", **static, **quiet)


@pytest.mark.parametrize("rendezvous", ["c10d", "static"])
def test_a_node_started_before_node_0_waits_for_its_store_then_trains(
    tmp_path: Path, rendezvous: str
) -> None:
    """Pods start in any order: node 1 starts first and waits for node 0's store instead of failing at
    torch's connect timeout (60 s for c10d); node 0 starts later and both train."""
    rdzv = free_port()
    args = ["--steps-per-epoch", "5", "--batch-size", "8", "--sample-cost-us", "0"]
    cmd = [LAUNCH, "--", "torchjob-train", *args]
    with running(cmd, _late_host_env(rendezvous, rdzv, 1), tmp_path / "node1.log") as node1:
        eventually(lambda: "waiting for the rendezvous store" in node1.output(), 60, "node 1 waiting")
        assert node1.popen.poll() is None, node1.output()[-3000:]
        with running(cmd, _late_host_env(rendezvous, rdzv, 0), tmp_path / "node0.log") as node0:
            rcs = [node0.wait(timeout=240), node1.wait(timeout=240)]
            outputs = [node0.output(), node1.output()]
    assert rcs == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert f"the rendezvous store at 127.0.0.1:{rdzv} accepts connections" in outputs[1]
    assert "waiting for the rendezvous store" not in outputs[0]  # node 0 hosts it


def test_a_node_whose_store_never_comes_exits_69_naming_it(tmp_path: Path) -> None:
    rdzv = free_port()
    termination_log = tmp_path / "termination-log"
    termination_log.write_text("")  # the kubelet creates the file; the trainer only overwrites it
    env = two_node_env(
        rdzv,
        "no-host",
        PET_RDZV_CONF="is_host=0",
        TORCHJOB_RENDEZVOUS_WAIT_SECONDS="3",
        TORCHJOB_TERMINATION_LOG=str(termination_log),
    )
    with running([LAUNCH, "--", "torchjob-train"], env, tmp_path / "node1.log") as node1:
        rc = node1.wait(timeout=120)
        output = node1.output()
    assert rc == constants.EXIT_RENDEZVOUS_UNREACHABLE, output[-3000:]
    message = termination_log.read_text()
    assert f"rendezvous store at 127.0.0.1:{rdzv} (node 0) was not reachable within 3 s" in message
    assert message in output
    assert "waiting for the rendezvous store" in output
    assert "joined process group" not in output  # torchrun's agent never started
