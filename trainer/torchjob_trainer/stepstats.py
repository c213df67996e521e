"""Step statistics: one accumulator feeds the progress window (line and gauges) and the run's summary.

Every step adds its samples, wall time and data wait once. The window restarts at each progress line;
the run totals never do, and become this rank's `summary.RankTotals` at the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torchjob_trainer.summary import RankTotals


@dataclass
class StepSums:
    """Sums over a run of steps; `seconds` is step wall time with the data wait included."""

    samples: int = 0
    steps: int = 0
    seconds: float = 0.0
    wait: float = 0.0

    def add(self, *, samples: int, seconds: float, wait: float) -> None:
        self.samples += samples
        self.steps += 1
        self.seconds += seconds
        self.wait += wait

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0

    @property
    def wait_ratio(self) -> float:
        return self.wait / self.seconds if self.seconds > 0 else 0.0

    @property
    def mean_step_seconds(self) -> float:
        return self.seconds / max(1, self.steps)


@dataclass
class StepStats:
    """This rank's steps: the run so far, the window since the last progress line, the last loss."""

    run: StepSums = field(default_factory=StepSums)
    window: StepSums = field(default_factory=StepSums)
    loss: float = math.nan

    def record(self, *, samples: int, seconds: float, wait: float, loss: float) -> None:
        for sums in (self.run, self.window):
            sums.add(samples=samples, seconds=seconds, wait=wait)
        self.loss = loss

    def take_window(self) -> StepSums:
        """The window that ends now; the next one starts empty."""
        window, self.window = self.window, StepSums()
        return window

    def rank_totals(self) -> RankTotals:
        run = self.run
        return RankTotals(
            samples=run.samples,
            train_seconds=run.seconds,
            data_wait_seconds=run.wait,
            steps=run.steps,
            loss=self.loss,
        )
