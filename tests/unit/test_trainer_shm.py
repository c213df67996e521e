from __future__ import annotations

import os
from pathlib import Path

import pytest
from torchjob_trainer.data.datasets import SyntheticDataset
from torchjob_trainer.data.loader import LoaderSettings, measure_batch_bytes, shm_safe
from torchjob_trainer.data.shm import plan_shm, shm_available_bytes, shm_need_bytes

MiB = 1 << 20


def test_need_is_workers_prefetch_batch_and_local_processes() -> None:
    assert shm_need_bytes(4, 2, MiB, 2) == 18 * MiB  # 8 in flight + 1 held by the step, per process
    assert shm_need_bytes(0, 2, MiB, 2) == 0


def test_fits_unchanged() -> None:
    plan = plan_shm(
        num_workers=4, prefetch_factor=2, batch_bytes=MiB, local_world_size=2, available_bytes=64 * MiB
    )
    assert (plan.num_workers, plan.prefetch_factor, plan.adapted) == (4, 2, False)


def test_lowers_prefetch_first() -> None:
    # (4 x 4 + 1) x 1 MiB x 2 = 34 MiB > 80% of 30 MiB = 24 MiB; prefetch 2 needs 18 MiB.
    plan = plan_shm(
        num_workers=4, prefetch_factor=4, batch_bytes=MiB, local_world_size=2, available_bytes=30 * MiB
    )
    assert plan.adapted
    assert plan.num_workers == 4
    assert plan.prefetch_factor == 2
    assert plan.need_bytes == 18 * MiB
    assert plan.reason == "lowered prefetch_factor"


def test_then_lowers_workers() -> None:
    plan = plan_shm(
        num_workers=8, prefetch_factor=2, batch_bytes=MiB, local_world_size=2, available_bytes=8 * MiB
    )
    assert plan.prefetch_factor == 1
    assert plan.num_workers == 2  # (2 x 1 + 1) x 1 MiB x 2 = 6 MiB <= 6.4 MiB
    assert plan.reason == "lowered num_workers"


def test_last_resort_is_in_process_loading() -> None:
    plan = plan_shm(
        num_workers=4, prefetch_factor=2, batch_bytes=64 * MiB, local_world_size=1, available_bytes=MiB
    )
    assert (plan.num_workers, plan.need_bytes, plan.adapted) == (0, 0, True)


def test_unknown_size_keeps_settings() -> None:
    plan = plan_shm(
        num_workers=4, prefetch_factor=2, batch_bytes=MiB, local_world_size=1, available_bytes=None
    )
    assert (plan.num_workers, plan.adapted) == (4, False)


def test_available_bytes_of_a_real_mount(tmp_path: Path) -> None:
    assert (shm_available_bytes(str(tmp_path)) or 0) > 0
    assert shm_available_bytes(str(tmp_path / "missing")) is None


def test_measured_batch_bytes_and_adaptation(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ds = SyntheticDataset(64, (3, 32, 32), 10)
    batch_bytes = measure_batch_bytes(ds, 16)
    assert batch_bytes == 16 * 3 * 32 * 32 * 4 + 16 * 8
    settings = LoaderSettings(num_workers=2, pin_memory=False, persistent_workers=True, prefetch_factor=2)
    huge = shm_safe(settings, batch_bytes=batch_bytes, local_world_size=1, shm_path=str(tmp_path))
    assert huge == settings
    st = os.statvfs(tmp_path)
    available = st.f_bavail * st.f_frsize
    big_batch = available  # one batch alone exceeds the mount
    with caplog.at_level("WARNING"):
        adapted = shm_safe(settings, batch_bytes=big_batch, local_world_size=1, shm_path=str(tmp_path))
    assert adapted.num_workers == 0
    assert "too small" in caplog.text


@pytest.mark.parametrize(
    ("cpus", "procs", "gpus", "hint"),
    [
        ("2", 1, 0, "64Mi"),
        ("8", 2, 0, "64Mi"),
        ("500m", 1, 0, "64Mi"),
        ("32", None, 8, "37Mi"),
        ("64", 1, 0, "100M"),
    ],
)
def test_the_operators_default_mount_holds_the_trainers_default_loader(
    cpus: str, procs: int | None, gpus: int, hint: str
) -> None:
    """The pod's /dev/shm (sized by the operator) against the trainer's shm check with `auto` workers from
    the same CPUs and a batch of the hint's size: the default loader runs as configured, never cut."""
    from torchjob_core import quantity, spec
    from torchjob_trainer.data.cpu import CpuBudget, auto_num_workers

    fields: dict[str, object] = {
        "resources": {"gpusPerNode": gpus, "limits": {"cpu": cpus}},
        "dataLoader": {"batchBytesHint": hint},
    }
    if procs is not None:
        fields["procsPerNode"] = procs
    job = spec.load(
        {"apiVersion": "torchjob.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "j"},
         "spec": {"image": "img:1", **fields}}
    )  # fmt: skip
    workers = auto_num_workers(CpuBudget(float(quantity.parse(cpus)), "cgroup-v2"), job.nproc_per_node)
    plan = plan_shm(
        num_workers=workers,
        prefetch_factor=job.spec.data_loader.prefetch_factor,
        batch_bytes=quantity.to_bytes(hint),
        local_world_size=job.nproc_per_node,
        available_bytes=quantity.to_bytes(job.shm_size_limit),
    )
    assert not plan.adapted, (job.shm_size_limit, workers, plan)
