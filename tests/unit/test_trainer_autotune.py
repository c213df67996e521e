from __future__ import annotations

import pytest
from torchjob_trainer.data.autotune import Measurement, autotune, candidates, time_batches
from torchjob_trainer.data.loader import LoaderSettings

BASE = LoaderSettings(num_workers=2, pin_memory=False, persistent_workers=True, prefetch_factor=2)


def test_candidates_span_in_process_to_twice_auto() -> None:
    options = candidates(BASE, cpus=4.0)
    workers = sorted({o.num_workers for o in options})
    assert workers == [0, 1, 2, 4]
    assert [o for o in options if o.num_workers == 0] == [LoaderSettings(0, False, True, 2)]
    assert {o.prefetch_factor for o in options if o.num_workers == 2} == {2, 4}
    assert len(options) == len(set(options))


def test_candidates_never_exceed_the_cpus() -> None:
    assert max(o.num_workers for o in candidates(BASE, cpus=2.0)) == 2


def test_picks_the_fastest_and_logs_a_table(caplog: pytest.LogCaptureFixture) -> None:
    speeds = {0: 100.0, 1: 180.0, 2: 390.0, 4: 250.0}
    measured: list[LoaderSettings] = []

    def measure(s: LoaderSettings) -> Measurement:
        measured.append(s)
        return Measurement(s, speeds[s.num_workers] + s.prefetch_factor, 0.01)

    options = candidates(BASE, cpus=4.0)
    with caplog.at_level("INFO"):
        best, table = autotune(options, measure)
    assert measured == options
    assert (best.num_workers, best.prefetch_factor) == (2, 4)
    assert len(table) == len(options)
    assert "samples/s" in caplog.text
    assert "*        2        4" in caplog.text


def test_time_batches_counts_steady_state() -> None:
    rate, first = time_batches(iter(range(100)), count=10, batch_size=8)
    assert rate > 0
    assert first >= 0
    assert time_batches(iter([]), count=10, batch_size=8)[0] == 0.0
