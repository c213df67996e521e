"""The end-of-run table: the trainer's summary file first, console progress for the gaps."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from torchjob_cli.progress import Progress, Tracker
from torchjob_cli.summary import RankSummary, from_summary_files, from_tracker, merge, table

# The shape torchjob_trainer.summary.build writes (docs/contracts.md "Trainer outputs").
TRAINER_SUMMARY = {
    "outcome": "completed",
    "world_size": 2,
    "samples_per_second": 300.0,
    "ranks": [
        {
            "rank": 0,
            "samples": 640,
            "steps": 20,
            "train_seconds": 2.0,
            "data_wait_seconds": 0.5,
            "samples_per_second": 320.0,
            "data_wait_ratio": 0.25,
        },
        {
            "rank": 1,
            "samples": 640,
            "steps": 20,
            "train_seconds": 4.0,
            "data_wait_seconds": 1.0,
            "samples_per_second": 160.0,
            "data_wait_ratio": 0.25,
        },
    ],
}


def test_summary_file_gives_per_rank_rows(tmp_path: Path) -> None:
    f = tmp_path / "summary-node-0.json"
    f.write_text(json.dumps(TRAINER_SUMMARY))
    rows = from_summary_files([f, tmp_path / "missing.json"])
    assert rows[1] == RankSummary(1, steps=20, samples_per_s=160.0, step_time_s=0.2, data_wait_ratio=0.25)


def test_merge_fills_loss_from_progress(tmp_path: Path) -> None:
    f = tmp_path / "s.json"
    f.write_text(json.dumps(TRAINER_SUMMARY))
    t = Tracker()
    t.add(Progress(rank=0, time=1, step=10, loss=2.0, samples_per_s=1.0))
    t.add(Progress(rank=0, time=2, step=20, loss=1.5, samples_per_s=3.0))
    t.add_scraped(Progress(rank=1, time=2, step=20, loss=1.25))
    rows = merge(from_summary_files([f]), from_tracker(t))
    assert [(r.rank, r.samples_per_s, r.final_loss) for r in rows] == [(0, 320.0, 1.5), (1, 160.0, 1.25)]

    console = Console(record=True, width=120)
    console.print(table(rows, title="j"))
    text = console.export_text()
    assert "320.0" in text and "100.0 ms" in text and "25.0%" in text and "1.25" in text


def test_progress_alone_still_summarises() -> None:
    t = Tracker()
    t.add(Progress(rank=0, time=1, step=2, samples_per_s=10.0, step_time_s=0.1, data_wait_ratio=0.5))
    t.add(Progress(rank=0, time=2, step=4, samples_per_s=30.0, step_time_s=0.3, data_wait_ratio=0.1))
    (row,) = merge({}, from_tracker(t))
    assert row.steps == 4 and row.samples_per_s == 20.0 and row.final_loss is None
