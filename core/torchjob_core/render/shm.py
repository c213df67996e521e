"""The always-present /dev/shm volume: a Memory emptyDir sized by `torchjob_core.sizing`."""

from __future__ import annotations

from typing import Any

from torchjob_core import constants
from torchjob_core.spec import TrainingJob


def shm_volume(job: TrainingJob) -> dict[str, Any]:
    """DataLoader workers hand batches over through /dev/shm; the runtime default is only 64 MB."""
    return {
        "name": constants.SHM_VOLUME_NAME,
        "emptyDir": {"medium": "Memory", "sizeLimit": job.shm_size_limit},
    }


def shm_mount() -> dict[str, Any]:
    return {"name": constants.SHM_VOLUME_NAME, "mountPath": constants.SHM_MOUNT_PATH}
