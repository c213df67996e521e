"""On-demand torch.profiler over a global step range; each rank writes a Chrome trace."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

log = logging.getLogger(__name__)


class StepProfiler:
    """Call `step(global_step)` before each step; profiles steps in `[start, end)`."""

    def __init__(self, step_range: tuple[int, int] | None, directory: Path, rank: int) -> None:
        self.range = step_range
        self.directory = directory
        self.rank = rank
        self._prof: profile | None = None
        self.trace: Path | None = None

    def step(self, global_step: int) -> None:
        if self.range is None:
            return
        start, end = self.range
        if self._prof is None and start <= global_step < end and self.trace is None:
            activities = [ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(ProfilerActivity.CUDA)
            self._prof = profile(activities=activities, record_shapes=True)
            self._prof.start()
            log.info("profiling from global step %d", global_step)
        elif self._prof is not None and global_step >= end:
            self.stop()

    def stop(self) -> None:
        if self._prof is None:
            return
        self._prof.stop()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.trace = self.directory / f"trace-rank{self.rank}.json"
        self._prof.export_chrome_trace(str(self.trace))
        self._prof = None
        log.info("profiler trace written to %s", self.trace)
