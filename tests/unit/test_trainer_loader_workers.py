"""Loader workers: they hand batches over by shm file name by default (torch's descriptors on request,
or when the shm manager cannot start), they run nicer than the training process, and the trainer can
end them wherever it leaves from. Real DataLoader workers, real torch_shm_manager."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing
from torch.utils.data import Dataset
from torchjob_trainer.config import LOADER_SHARING, ConfigError, TrainerConfig
from torchjob_trainer.data import workers
from torchjob_trainer.data.loader import LoaderSettings, make_loader, resolve_settings


class WhoHandsOver(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Batches that say which worker made them and with which sharing strategy."""

    def __len__(self) -> int:
        return 64

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        strategy = LOADER_SHARING.index(torch.multiprocessing.get_sharing_strategy())
        values = torch.tensor(indices, dtype=torch.float32).repeat(64, 1)  # a few KiB, in shm
        return values, torch.tensor([os.getpid(), strategy])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


def hand_over(config: TrainerConfig) -> tuple[list[torch.Tensor], set[int], set[str]]:
    settings = resolve_settings(config, local_world_size=1, cuda=False)
    loader = make_loader(WhoHandsOver(), None, 8, settings)
    batches = list(loader)
    values = [b[0][0] for b in batches]
    pids = {int(b[1][0]) for b in batches}
    strategies = {LOADER_SHARING[int(b[1][1])] for b in batches}
    return values, pids, strategies


def test_workers_hand_batches_over_by_file_name_and_the_trainer_keeps_torchs_default() -> None:
    values, pids, strategies = hand_over(TrainerConfig(num_workers=2))
    assert strategies == {"file_system"}
    assert torch.equal(torch.cat(values), torch.arange(64, dtype=torch.float32))
    assert len(pids) == 2 and os.getpid() not in pids
    assert torch.multiprocessing.get_sharing_strategy() == "file_descriptor"


def test_no_shared_memory_file_outlives_the_batches() -> None:
    _, pids, _ = hand_over(TrainerConfig(num_workers=2))
    gc.collect()
    left = [p.name for p in Path("/dev/shm").iterdir() if any(f"_{pid}_" in p.name for pid in pids)]
    assert left == []


def test_descriptors_on_request() -> None:
    _, _, strategies = hand_over(TrainerConfig(num_workers=1, loader_sharing="file_descriptor"))
    assert strategies == {"file_descriptor"}


WITHOUT_MANAGER = """
import sys
sys.path.insert(0, sys.argv[1])
from test_trainer_loader_workers import TrainerConfig, hand_over
values, _, strategies = hand_over(TrainerConfig(num_workers=1))
print(sorted(strategies), len(values))
"""


def test_a_host_where_the_shm_manager_cannot_start_keeps_descriptors(tmp_path: Path) -> None:
    # torch_shm_manager makes its socket under TMPDIR: a read-only root without /tmp looks like this. A
    # fresh process: a forked worker reuses a manager its parent already talks to.
    env = {**os.environ, "TMPDIR": str(tmp_path / "missing")}
    run = subprocess.run(
        [sys.executable, "-c", WITHOUT_MANAGER, str(Path(__file__).parent)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert run.stdout.strip() == "['file_descriptor'] 8"
    assert "loader sharing file_system unusable here (torch_shm_manager at" in run.stderr


def test_an_unknown_strategy_names_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"--loader-sharing \(TORCHJOB_LOADER_SHARING\)"):
        TrainerConfig(loader_sharing="file_socket")


class HowNice(Dataset[tuple[torch.Tensor]]):
    """Batches that say how nice the worker that made them runs."""

    def __len__(self) -> int:
        return 16

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor]:
        return (torch.tensor([os.getpriority(os.PRIO_PROCESS, 0)]),)

    def __getitem__(self, index: int) -> tuple[torch.Tensor]:
        raise NotImplementedError


def worker_niceness(config: TrainerConfig) -> set[int]:
    loader = make_loader(HowNice(), None, 8, resolve_settings(config, local_world_size=1, cuda=False))
    return {int(b[0]) for b in loader}


def test_workers_run_nicer_than_the_training_process_which_keeps_its_own() -> None:
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    assert worker_niceness(TrainerConfig(num_workers=2)) == {min(19, mine + 10)}
    assert worker_niceness(TrainerConfig(num_workers=1, loader_worker_nice=3)) == {min(19, mine + 3)}
    assert os.getpriority(os.PRIO_PROCESS, 0) == mine


def test_nice_zero_keeps_torchs_way() -> None:
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    assert worker_niceness(TrainerConfig(num_workers=1, loader_worker_nice=0)) == {mine}


def test_a_worker_that_may_not_lower_its_priority_still_loads(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(_increment: int) -> int:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "nice", refuse)
    workers.lower_priority(10)  # what a worker under a sandbox that forbids setpriority runs
    assert "cannot lower its priority" in caplog.text


class Stuck(WhoHandsOver):
    """A dataset whose second batch never comes (user code stuck in a read)."""

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        if indices[0] >= 8:
            time.sleep(3600)
        return super().__getitems__(indices)


@pytest.mark.parametrize("dataset", [WhoHandsOver(), Stuck()], ids=["idle", "stuck"])
def test_end_workers_ends_the_workers_of_an_iterator_still_held(dataset: WhoHandsOver) -> None:
    """What an error leaving the trainer does: its traceback still holds the iterator, so nothing else
    would end the workers, which ignore SIGTERM. One stuck in user code is killed after the join."""
    settings = LoaderSettings(num_workers=2, pin_memory=False, persistent_workers=True, prefetch_factor=1)
    held = iter(make_loader(dataset, None, 8, settings))
    next(held)
    procs = list(held._workers)  # type: ignore[attr-defined]
    assert all(p.is_alive() for p in procs)
    workers.end_workers()
    assert not any(p.is_alive() for p in procs)
    workers.end_workers()  # nothing left to end


LEFT_ALIVE = """
import sys
sys.path.insert(0, sys.argv[1])
from test_trainer_loader_workers import LoaderSettings, WhoHandsOver, make_loader
settings = LoaderSettings(num_workers=2, pin_memory=False, persistent_workers=True, prefetch_factor=1)
loader = make_loader(WhoHandsOver(), None, 8, settings)
held = iter(loader)
print(next(held)[1].tolist() != [])
"""


def test_a_script_that_leaves_its_loader_alive_still_exits() -> None:
    """No trainer `finally` here: the atexit hook ends the SIGTERM-ignoring workers before
    multiprocessing's own exit hook would join them for ever."""
    run = subprocess.run(
        [sys.executable, "-c", LEFT_ALIVE, str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert run.stdout.strip() == "True"
