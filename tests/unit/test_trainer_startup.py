"""Start-up phases: contiguous from the process's start, one parseable line; the background import."""

from __future__ import annotations

import json
import logging
import time

import pytest
from torchjob_trainer import startup


def test_process_start_is_before_now_and_the_package_import() -> None:
    started = startup.process_started_at()
    assert started is not None
    import torchjob_trainer

    assert time.monotonic() - 3600 < started <= torchjob_trainer.IMPORTED_AT + 0.02  # clock ticks: 10 ms


def test_phases_are_contiguous_and_the_line_parses() -> None:
    clock = startup.StartupPhases(100.0)
    clock.mark("imports", at=103.0)
    clock.mark("rendezvous", at=103.5)
    clock.mark("first_step", at=104.25)
    assert clock.phases == {"imports": 3.0, "rendezvous": 0.5, "first_step": 0.75}
    line = clock.line()
    assert line.endswith("first step 4.25 s after process start, 0.75 s after the rendezvous")
    text = line.removeprefix(startup.PHASES_PREFIX).split("; ")[0]
    assert json.loads(text) == clock.phases


def test_since_process_start_counts_interpreter_and_imports() -> None:
    clock = startup.StartupPhases.since_process_start()
    assert list(clock.phases)[-1] == "imports"
    assert clock.started_at <= clock.marks["imports"] <= time.monotonic()
    assert sum(clock.phases.values()) == pytest.approx(clock.marks["imports"] - clock.started_at, abs=0.002)


def test_a_failed_background_import_only_warns(caplog: pytest.LogCaptureFixture) -> None:
    prefetch = startup.Prefetch(("json", "no_such_module_here")).start()
    with caplog.at_level(logging.WARNING):
        prefetch.wait()
    assert "no_such_module_here" in caplog.text
    assert startup.prefetch_imports(False) is None
