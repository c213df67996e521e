"""Start-up phases, from the process's own start to the end of its first training step.

Each rank logs one line after its first step:

    start-up phases (seconds): {"interpreter": 0.05, "imports": 3.1, "rendezvous": 0.4, ...}; first step
    5.2 s after process start, 1.1 s after the rendezvous

The phases are contiguous, so they add up to the first figure. `interpreter` runs from the process's
start (the kernel's record of it) to the trainer package's first import; `imports` to the start of the
run (torch and the trainer's modules). A worker forked from the launcher's preloaded server
(`forkstart`) has one `forked` phase in their place, from its fork to the start of the run; the import
then happened once per node, before the fork. `benchmarks/startup.py` parses the line; the metrics
`torchjob_trainer_startup_phase_seconds{phase}` and `torchjob_trainer_startup_seconds` carry the same figures.

The first optimizer imports `torch._dynamo` (seconds of CPU). `prefetch_imports` starts that import in a
thread before the rendezvous, so it runs while `init_process_group` waits for the other ranks instead of
after it.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field

import torchjob_trainer

log = logging.getLogger(__name__)

PHASES_PREFIX = "start-up phases (seconds): "
# Imported by the first optimizer (torch._dynamo) and the first DDP forward; the slow ones first.
PREFETCH_MODULES = ("torch._dynamo",)


def process_started_at() -> float | None:
    """This process's start on the `time.monotonic` clock, from /proc (None where there is no /proc).

    /proc/self/stat's field 22 counts clock ticks since boot, suspend included (CLOCK_BOOTTIME).
    """
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            stat = f.read()
        # The command name (field 2) may hold spaces; fields after it follow its closing parenthesis.
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return time.monotonic() - age


@dataclass
class StartupPhases:
    """Contiguous named phases; `mark(name)` ends the phase running since the previous mark."""

    started_at: float
    phases: dict[str, float] = field(default_factory=dict)
    marks: dict[str, float] = field(default_factory=dict)
    _last: float = 0.0

    def __post_init__(self) -> None:
        self._last = self.started_at

    @classmethod
    def since_process_start(cls, *, forked: bool = False) -> StartupPhases:
        """Phases from the process's start; the first two end at the package import and now (one,
        `forked`, ends now in a worker forked after the imports)."""
        imported_at = torchjob_trainer.IMPORTED_AT
        started = process_started_at()
        if forked and started is not None:
            # Forked from a process that had imported everything (forkstart): no import phase here.
            clock = cls(started)
            clock.mark("forked")
            return clock
        # A start just after the import means the clocks disagree (coarse ticks): count from the import.
        clock = cls(started if started is not None and started <= imported_at else imported_at)
        if clock.started_at < imported_at:
            clock.mark("interpreter", at=imported_at)
        clock.mark("imports")
        return clock

    def mark(self, name: str, *, at: float | None = None) -> None:
        now = time.monotonic() if at is None else at
        self.phases[name] = round(now - self._last, 3)
        self.marks[name] = now
        self._last = now

    def since(self, name: str) -> float | None:
        """Seconds from the end of phase `name` to the last mark (None if it was never marked)."""
        end = self.marks.get(name)
        return None if end is None else round(self._last - end, 3)

    def total(self) -> float:
        """Seconds from the start to the last mark: the sum of the phases."""
        return round(self._last - self.started_at, 3)

    def line(self) -> str:
        total = self.total()
        text = f"{PHASES_PREFIX}{json.dumps(self.phases)}; first step {total} s after process start"
        after_rendezvous = self.since("rendezvous")
        if after_rendezvous is not None:
            text += f", {after_rendezvous} s after the rendezvous"
        return text


class Prefetch:
    """Imports `modules` in a daemon thread; `wait()` joins it (and says if an import failed)."""

    def __init__(self, modules: tuple[str, ...]) -> None:
        self._modules = modules
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="torchjob-prefetch", daemon=True)

    def _run(self) -> None:
        try:
            for name in self._modules:
                importlib.import_module(name)
        except BaseException as exc:  # the main thread imports it again and raises there
            self._error = exc

    def start(self) -> Prefetch:
        self._thread.start()
        return self

    def wait(self) -> None:
        self._thread.join()
        if self._error is not None:
            log.warning("background import failed (%s); importing on first use", self._error)


def prefetch_imports(enabled: bool) -> Prefetch | None:
    return Prefetch(PREFETCH_MODULES).start() if enabled else None
