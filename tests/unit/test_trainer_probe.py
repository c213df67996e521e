"""The start-up probe and the JPEG decode dataset, on real data (no fakes)."""

from __future__ import annotations

import torch
from torchjob_trainer.config import TrainerConfig
from torchjob_trainer.data.cpu import CpuBudget
from torchjob_trainer.data.datasets import SyntheticDataset
from torchjob_trainer.data.jpeg import JpegDataset
from torchjob_trainer.data.loader import resolve_settings
from torchjob_trainer.data.probe import FetchProbe, fresh_copy, probe_fetch


def test_probe_times_fetch_and_handoff_on_the_real_batch() -> None:
    data = SyntheticDataset(64, (3, 8, 8), 10)
    probe = probe_fetch(data, 16)
    assert probe.batch_bytes == 16 * 3 * 8 * 8 * 4 + 16 * 8
    assert probe.fetch_seconds > 0
    assert probe.handoff_seconds is not None and probe.handoff_seconds > 0
    assert probe_fetch(data, 16, handoff=False).handoff_seconds is None


def test_cheap_batches_make_auto_load_in_process() -> None:
    config = TrainerConfig()
    budget = CpuBudget(4.0, "cgroup-v2")
    cheap = FetchProbe(1000, fetch_seconds=0.0002, handoff_seconds=0.002)
    costly = FetchProbe(1000, fetch_seconds=0.02, handoff_seconds=0.002)
    assert (
        resolve_settings(config, local_world_size=1, cuda=False, budget=budget, probe=cheap).num_workers == 0
    )
    assert (
        resolve_settings(config, local_world_size=1, cuda=False, budget=budget, probe=costly).num_workers == 6
    )
    # An explicit count is the user's: the probe never overrides it.
    explicit = TrainerConfig(num_workers=3)
    assert (
        resolve_settings(explicit, local_world_size=1, cuda=False, budget=budget, probe=cheap).num_workers
        == 3
    )
    assert not FetchProbe(1, 0.0, None).cheap
    # Fetch and hand-over level (in-memory data through the slots): workers would only add IPC.
    assert FetchProbe(1000, fetch_seconds=0.00057, handoff_seconds=0.00057).cheap
    assert FetchProbe(1000, fetch_seconds=0.0011, handoff_seconds=0.00057).cheap
    assert not FetchProbe(1000, fetch_seconds=0.0012, handoff_seconds=0.00057).cheap


def test_fresh_copy_allocates_new_storage() -> None:
    x = torch.ones(3)
    (y, (z,)) = fresh_copy((x, [x]))
    assert torch.equal(y, x) and y.data_ptr() != x.data_ptr() and z.data_ptr() != x.data_ptr()


def test_jpeg_dataset_decodes_and_augments_to_the_image_size() -> None:
    data = JpegDataset(10, 16, 5, distinct=4)
    assert len(data.images) == 4
    assert all(img[:2] == b"\xff\xd8" for img in data.images)  # JPEG start-of-image marker
    x, y = data[3]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert int(y) == (3 * 7) % 5
    xs, ys = data.__getitems__([0, 1, 2])
    assert xs.shape == (3, 3, 16, 16) and ys.tolist() == [0, 7 % 5, 14 % 5]
