"""Small pure pieces: progress lines, summary, sampler position, batched fetch, models, user API."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from torch.utils.data import DistributedSampler
from torchjob_trainer import logs, summary
from torchjob_trainer import main as main_module
from torchjob_trainer.config import TrainerConfig
from torchjob_trainer.data.datasets import SyntheticDataset
from torchjob_trainer.data.loader import LoaderSettings, RunSampler, make_loader
from torchjob_trainer.metrics import RankLabels, TrainerMetrics
from torchjob_trainer.models import build_model
from torchjob_trainer.train import build_workload
from torchjob_trainer.userapi import Workload, as_workload, build_optimizer


def test_progress_line_round_trip() -> None:
    line = "[default0]:2026-01-01T00:00:00Z INFO [...] x: " + logs.progress_line({"step": 3, "loss": 0.5})
    assert logs.parse_progress(line) == {"step": 3, "loss": 0.5}
    assert logs.parse_progress("no progress here") is None
    assert logs.parse_progress("torchjob-progress {broken") is None


def test_summary_aggregates_ranks(tmp_path: Path) -> None:
    per_rank = [summary.RankTotals(100, 2.0, 0.5, 10, 0.25), summary.RankTotals(100, 4.0, 2.0, 10)]
    s = summary.build(per_rank, outcome="completed")
    assert s["samples"] == 200
    assert s["samples_per_second"] == 75.0
    assert s["data_wait_ratio"] == round(2.5 / 6.0, 4)
    assert [r["data_wait_ratio"] for r in s["ranks"]] == [0.25, 0.5]
    assert [r["loss"] for r in s["ranks"]] == [0.25, None]  # no NaN in JSON
    assert s["loss"] == 0.25
    target = tmp_path / "out" / "summary.json"
    summary.report(s, str(target))
    assert '"samples": 200' in target.read_text()
    assert "all" in summary.format_table(s)


def _epoch_order(ds: SyntheticDataset, epoch: int) -> list[int]:
    share = DistributedSampler(ds, num_replicas=2, rank=0, shuffle=True, seed=1, drop_last=True)
    share.set_epoch(epoch)
    return list(share)


def test_run_sampler_streams_every_epoch_left_each_in_its_own_order() -> None:
    ds = SyntheticDataset(20, (1,), 2)  # 10 samples per rank: 2 batches of 4 (drop_last: 2 left out)
    share = DistributedSampler(ds, num_replicas=2, rank=0, shuffle=True, seed=1, drop_last=True)
    sampler = RunSampler(share, batch_size=4, epochs=3)
    assert sampler.steps_per_epoch == 2
    assert list(sampler) == [i for e in range(3) for i in _epoch_order(ds, e)[:8]]
    assert len(sampler) == 24


def test_run_sampler_resumes_mid_epoch_and_caps_steps() -> None:
    ds = SyntheticDataset(20, (1,), 2)
    share = DistributedSampler(ds, num_replicas=2, rank=0, shuffle=True, seed=1, drop_last=True)
    sampler = RunSampler(share, batch_size=4, epochs=3)
    sampler.cap_steps(1)  # --steps-per-epoch 1
    sampler.start_at(1, 0)
    assert list(sampler) == _epoch_order(ds, 1)[:4] + _epoch_order(ds, 2)[:4]
    sampler.cap_steps(5)  # a cap above the epoch changes nothing
    assert sampler.steps_per_epoch == 1
    full = RunSampler(share, batch_size=4, epochs=2)
    full.start_at(1, 1)  # one step of epoch 1 already trained
    assert list(full) == _epoch_order(ds, 1)[4:8]
    assert len(full) == 4


def test_one_loader_iterator_serves_every_epoch_in_whole_batches() -> None:
    ds = SyntheticDataset(20, (1,), 2)
    share = DistributedSampler(ds, num_replicas=2, rank=0, shuffle=True, seed=1, drop_last=True)
    sampler = RunSampler(share, batch_size=4, epochs=2)
    settings = LoaderSettings(num_workers=1, pin_memory=False, persistent_workers=True, prefetch_factor=2)
    batches = list(make_loader(ds, sampler, 4, settings))
    assert len(batches) == 4 and all(b[1].shape[0] == 4 for b in batches)


def test_batched_fetch_gives_collated_batches() -> None:
    ds = SyntheticDataset(64, (3, 8, 8), 10, seed=2)
    settings = LoaderSettings(num_workers=0, pin_memory=False, persistent_workers=False, prefetch_factor=2)
    loader = make_loader(ds, None, 16, settings)
    x, y = next(iter(loader))
    assert x.shape == (16, 3, 8, 8)
    assert y.shape == (16,)
    assert torch.equal(y, torch.tensor([ds[i][1].item() for i in range(16)]))


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_models_accept_any_sample_shape(name: str) -> None:
    for shape in [(3, 16, 16), (1, 28, 28)]:
        model = build_model(name, shape, 10)
        assert model(torch.zeros(2, *shape)).shape == (2, 10)


def test_builtin_workload() -> None:
    workload = build_workload(TrainerConfig(dataset_size=8, image_size=8))
    optimizer = build_optimizer(workload)
    assert isinstance(optimizer, torch.optim.SGD)


def test_user_entrypoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_workload.py").write_text(
        "import torch\n"
        "from torchjob_trainer.data.datasets import SyntheticDataset\n"
        "def build(config):\n"
        "    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))\n"
        "    return (model, SyntheticDataset(8, (4,), 3), torch.nn.CrossEntropyLoss(),\n"
        "            lambda params: torch.optim.Adam(params, lr=config.lr))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    workload = build_workload(TrainerConfig(user_entrypoint="my_workload:build"))
    assert isinstance(workload, Workload)
    assert isinstance(build_optimizer(workload), torch.optim.Adam)
    sys.modules.pop("my_workload", None)
    with pytest.raises(TypeError, match="--user-entrypoint"):
        as_workload([1, 2])
    with pytest.raises(ValueError, match="--user-entrypoint"):
        build_workload(TrainerConfig(user_entrypoint="my_workload:absent"))


def test_metric_names_and_labels() -> None:
    metrics = TrainerMetrics(RankLabels("mnist", 3, 1, 1), cuda=False)
    metrics.observe_step(samples=32, step_seconds=0.2, wait_seconds=0.05, loss=1.5)
    metrics.observe_window(samples_per_second=160.0, data_wait_ratio=1.7)
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())}
    for name in (
        "torchjob_trainer_samples",
        "torchjob_trainer_step_seconds",
        "torchjob_trainer_data_wait_seconds",
        "torchjob_trainer_step_duration_seconds",
        "torchjob_trainer_data_wait_ratio",
        "torchjob_trainer_samples_per_second",
        "torchjob_trainer_loss",
        "torchjob_trainer_epoch",
        "torchjob_trainer_step",
        "torchjob_trainer_dataloader_workers",
    ):
        assert name in families, name
    sample = next(s for s in families["torchjob_trainer_samples"].samples if s.name.endswith("_total"))
    assert sample.labels == {"job": "mnist", "rank": "3", "local_rank": "1", "node_rank": "1"}
    assert sample.value == 32
    ratio = families["torchjob_trainer_data_wait_ratio"].samples[0].value
    assert ratio == 1.0  # clamped to 0-1


def test_startup_metrics_carry_each_phase_and_the_total() -> None:
    from torchjob_trainer.startup import StartupPhases

    clock = StartupPhases(100.0)
    clock.mark("imports", at=101.5)
    clock.mark("rendezvous", at=102.0)
    clock.mark("first_step", at=104.25)
    metrics = TrainerMetrics(RankLabels("mnist", 3, 1, 1), cuda=False)
    metrics.observe_startup(clock.phases, clock.total())
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())}
    phases = {s.labels["phase"]: s.value for s in families["torchjob_trainer_startup_phase_seconds"].samples}
    assert phases == {"imports": 1.5, "rendezvous": 0.5, "first_step": 2.25}
    (total,) = families["torchjob_trainer_startup_seconds"].samples
    assert total.value == 4.25
    assert total.labels == {"job": "mnist", "rank": "3", "local_rank": "1", "node_rank": "1"}


def test_preemption_request_and_budget() -> None:
    from torchjob_trainer.preemption import EXIT_PREEMPTED, Preemption

    p = Preemption(grace_seconds=5.0)
    assert not p.requested
    assert p.remaining() == 5.0
    p.request()  # a peer was preempted
    assert p.requested
    assert 0 < p.remaining() <= 5.0
    p.cancel()
    assert EXIT_PREEMPTED == 143


def test_exit_flushes_the_logs_then_skips_interpreter_finalization(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    exits: list[int] = []

    def record_exit(code: int) -> None:
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(main_module.os, "_exit", record_exit)
    print("last line", end="")
    with pytest.raises(SystemExit):
        main_module.exit_now(73)
    assert exits == [73]
    assert capsys.readouterr().out == "last line"
