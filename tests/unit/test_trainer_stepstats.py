"""One step accumulator: the progress window restarts at each line, the run totals feed the summary."""

from __future__ import annotations

import math

import pytest
from torchjob_trainer import summary
from torchjob_trainer.stepstats import StepStats, StepSums


def test_window_restarts_and_run_totals_keep_every_step() -> None:
    stats = StepStats()
    stats.record(samples=32, seconds=0.5, wait=0.1, loss=2.0)
    stats.record(samples=32, seconds=1.5, wait=0.3, loss=1.5)
    window = stats.take_window()
    assert (window.samples, window.steps) == (64, 2)
    assert window.samples_per_second == 32.0
    assert window.wait_ratio == pytest.approx(0.2)
    assert window.mean_step_seconds == 1.0
    stats.record(samples=16, seconds=1.0, wait=0.0, loss=1.0)
    assert stats.take_window() == StepSums(samples=16, steps=1, seconds=1.0, wait=0.0)
    assert stats.run == StepSums(samples=80, steps=3, seconds=3.0, wait=pytest.approx(0.4))
    assert stats.rank_totals() == summary.RankTotals(80, 3.0, pytest.approx(0.4), 3, 1.0)


def test_no_steps_reads_zero_rates_and_no_loss() -> None:
    stats = StepStats()
    assert stats.take_window().samples_per_second == 0.0
    assert stats.run.wait_ratio == 0.0
    assert math.isnan(stats.rank_totals().loss)
    built = summary.build([stats.rank_totals()], outcome="completed")
    assert built["samples_per_second"] == 0.0
    assert built["loss"] is None
