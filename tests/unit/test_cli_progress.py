"""Rank attribution of output lines and parsing of the trainer's own progress lines."""

from __future__ import annotations

from torchjob_cli.progress import RANK_PREFIX_TEMPLATE, Progress, Tracker, parse_progress, split_rank_line
from torchjob_trainer.logs import progress_line


def test_worker_lines_carry_node_and_rank_and_agent_lines_only_the_node() -> None:
    # What torchrun renders from the template the CLI sets, for global rank 3 of node 1.
    prefix = RANK_PREFIX_TEMPLATE.format(node=1).replace("${rank}", "3")
    rl = split_rank_line(1, prefix + "hello [x]")
    assert (rl.node, rl.rank, rl.text) == (1, 3, "hello [x]")
    agent = split_rank_line(0, "INFO torch.distributed.elastic: rendezvous done")
    assert (agent.node, agent.rank) == (0, None)


def test_parses_the_trainers_progress_line() -> None:
    fields = {
        "step": 40,
        "total_steps": 100,
        "epoch": 1,
        "epochs": 2,
        "loss": 0.5,
        "samples_per_second": 1234.5,
        "step_seconds": 0.02,
        "data_wait_ratio": 0.1,
        "elapsed_seconds": 3.0,
    }
    line = "2026-01-01 INFO [default/j rank 0/4 local 0 node 0] torchjob_trainer.train: " + progress_line(
        fields
    )
    p = parse_progress(0, line, now=5.0)
    assert p == Progress(
        rank=0,
        time=5.0,
        step=40,
        total_steps=100,
        epoch=1,
        total_epochs=2,
        samples_per_s=1234.5,
        step_time_s=0.02,
        data_wait_ratio=0.1,
        loss=0.5,
    )


def test_other_lines_are_not_progress() -> None:
    assert parse_progress(0, "loss went down", now=0) is None
    assert parse_progress(0, "torchjob-progress {not json", now=0) is None
    assert parse_progress(0, 'torchjob-progress {"loss": 1}', now=0) is None  # no step


def test_tracker_prefers_scraped_throughput_of_all_ranks() -> None:
    t = Tracker()
    t.add(Progress(rank=0, time=1, step=5, samples_per_s=100.0))
    assert t.total_samples_per_s() == 100.0
    t.add_scraped(Progress(rank=0, time=1, step=5, samples_per_s=90.0))
    t.add_scraped(Progress(rank=1, time=1, step=5, samples_per_s=80.0))
    assert t.total_samples_per_s() == 170.0
    assert t.leader() == t.ranks[0].last
    assert set(t.series_for_plot()) == {0, 1}
