from __future__ import annotations

import pytest
import torch
from torchjob_trainer.data import autotune as at
from torchjob_trainer.data.autotune import Collectives, Measurement, autotune, candidates, time_batches
from torchjob_trainer.data.loader import LoaderSettings

BASE = LoaderSettings(num_workers=2, pin_memory=False, persistent_workers=True, prefetch_factor=2)


def test_candidates_span_in_process_to_two_workers_per_cpu() -> None:
    options = candidates(BASE, cpus_per_process=4.0)
    assert [o.num_workers for o in options] == [0, 2, 4, 6, 8]
    assert {o.prefetch_factor for o in options} == {2}
    assert candidates(BASE, 2.0)[-1].num_workers == 4  # oversubscription is a candidate
    assert [o.num_workers for o in candidates(BASE, 0.5)] == [0, 1, 2]


def test_refinement_tries_a_deeper_prefetch_for_the_winner_only() -> None:
    assert at.refinements(BASE) == [LoaderSettings(2, False, True, 4)]
    assert at.refinements(LoaderSettings(0, False, True, 2)) == []


def test_picks_the_fastest_then_refines_it_and_logs_a_table(caplog: pytest.LogCaptureFixture) -> None:
    speeds = {0: 100.0, 2: 390.0, 4: 250.0, 6: 200.0, 8: 150.0}
    measured: list[LoaderSettings] = []

    def measure(s: LoaderSettings) -> Measurement:
        measured.append(s)
        return Measurement(s, speeds[s.num_workers] + s.prefetch_factor, 0.01)

    options = candidates(BASE, 4.0)
    with caplog.at_level("INFO"):
        best, table = autotune(options, measure)
    assert measured == [*options, LoaderSettings(2, False, True, 4)]
    assert (best.num_workers, best.prefetch_factor) == (2, 4)
    assert len(table) == len(options) + 1
    assert "samples/s" in caplog.text
    assert "*        2        4" in caplog.text
    assert "s of a inf s budget" in caplog.text


def test_budget_skips_the_rest_but_always_measures_one(caplog: pytest.LogCaptureFixture) -> None:
    measured: list[int] = []

    def measure(s: LoaderSettings) -> Measurement:
        measured.append(s.num_workers)
        return Measurement(s, 1.0, 0.0)

    with caplog.at_level("INFO"):
        best, _ = autotune(candidates(BASE, 4.0), measure, max_seconds=0.0)
    assert measured == [0]
    assert best.num_workers == 0
    assert "budget ran out; 4 candidates not measured" in caplog.text


def test_collectives_decide_for_every_rank() -> None:
    """A non-zero rank measures alike but trains with rank 0's pick (broadcast), and stops when any rank
    is over budget (agree)."""
    rank0_pick = LoaderSettings(4, False, True, 2)
    agreed: list[bool] = []

    def broadcast(value: object) -> object:
        return rank0_pick if isinstance(value, LoaderSettings) else value

    def agree(flag: bool) -> bool:
        agreed.append(flag)
        return len(agreed) > 3  # another rank ran out of time before the 5th candidate

    def measure(s: LoaderSettings) -> Measurement:
        return Measurement(s, 1000.0 if s.num_workers == 2 else 10.0, 0.0)

    best, results = autotune(candidates(BASE, 4.0), measure, coll=Collectives(broadcast, agree))
    assert best == rank0_pick
    assert len(results) == 4


def test_time_steps_runs_the_step_on_each_batch() -> None:
    stepped: list[int] = []
    rate, first = at.time_steps(iter(range(100)), stepped.append, warmup=3, count=10, batch_size=8)
    assert stepped == list(range(13))  # the warm-up batches train too, untimed
    assert rate > 0
    assert first >= 0
    assert time_batches(iter([]), warmup=1, count=10, batch_size=8)[0] == 0.0
    assert time_batches(iter(range(3)), warmup=3, count=10, batch_size=8)[0] == 0.0  # none left to time


def test_a_short_window_grows_by_rank_zeros_count() -> None:
    """Batches added to reach the window's seconds come from rank 0 (`same_count`): ranks step alike."""
    stepped: list[int] = []
    asked: list[int] = []

    def rank0_says(mine: int) -> int:
        asked.append(mine)
        return 3

    at.time_steps(
        iter(range(100)),
        stepped.append,
        warmup=2,
        count=4,
        batch_size=8,
        min_seconds=60,
        same_count=rank0_says,
    )
    assert len(stepped) == 2 + 4 + 3
    assert asked and asked[0] > 0  # this rank wanted more, at its own pace
    assert at.extra_batches(count=20, elapsed=0.25, min_seconds=1.0) == 60


def test_preserving_restores_model_and_optimizer() -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    before = [p.detach().clone() for p in model.parameters()]
    with at.preserving(model, opt):
        model(torch.ones(4, 3)).sum().backward()
        opt.step()
        assert not torch.equal(before[0], model.weight)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert opt.state_dict()["state"] == {}
    with at.preserving(model, opt, enabled=False):
        model.weight.data.add_(1.0)
    assert not torch.equal(before[0], model.weight)
