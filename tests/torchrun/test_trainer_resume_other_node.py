"""Two pods with their own checkpoint volumes: the newest checkpoint is found on whichever node has it."""

from __future__ import annotations

from pathlib import Path

from harness.ports import free_port
from torchjob_trainer import checkpoint
from torchjob_trainer.config import TrainerConfig
from torchjob_trainer.train import build_workload
from torchjob_trainer.userapi import build_optimizer
from torchrun.trainer_procs import LAUNCH, read_summary, running, two_node_env

SAVED_STEP, STEPS = 7, 30


def _seed_checkpoint(directory: Path) -> None:
    workload = build_workload(TrainerConfig())
    optimizer = build_optimizer(workload)
    checkpoint.save(
        directory,
        model_state=workload.model.state_dict(),
        optimizer_state=optimizer.state_dict(),
        position=checkpoint.Position(epoch=0, step_in_epoch=SAVED_STEP, global_step=SAVED_STEP),
    )


def test_resume_from_a_checkpoint_only_one_node_has(tmp_path: Path) -> None:
    rdzv = free_port()
    dirs = [tmp_path / "node-a", tmp_path / "node-b"]
    _seed_checkpoint(dirs[1])  # rank assignment decides which rank sees it; either way must work
    summary_file = tmp_path / "summary.json"

    def env(node: int) -> dict[str, str]:
        return two_node_env(
            rdzv,
            "resume-other",
            TORCHJOB_METRICS_PORT="0",
            TORCHJOB_NUM_WORKERS="0",
            TORCHJOB_CHECKPOINT_DIR=str(dirs[node]),
            TORCHJOB_SUMMARY_FILE=str(summary_file),
        )

    cmd = [LAUNCH, "--", "torchjob-train", "--steps-per-epoch", str(STEPS), "--batch-size", "16"]
    with running(cmd, env(0), tmp_path / "a.log") as a, running(cmd, env(1), tmp_path / "b.log") as b:
        rcs = [a.wait(timeout=240), b.wait(timeout=240)]
        output = a.output() + b.output()
    assert rcs == [0, 0], output[-4000:]
    assert output.count(f"global step {SAVED_STEP}") >= 2  # both ranks resumed there
    summary = read_summary(summary_file)
    assert summary["global_step"] == STEPS
    assert [r["steps"] for r in summary["ranks"]] == [STEPS - SAVED_STEP] * 2
