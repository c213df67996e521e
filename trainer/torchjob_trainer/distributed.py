"""Process-group setup from torchrun's env: device from LOCAL_RANK, NCCL on CUDA (eager init), gloo on CPU."""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistEnv:
    """What torchrun tells each worker. Ranks are not stable across restarts: never key state on them."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node_rank: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DistEnv:
        env = os.environ if env is None else env

        def get(name: str, default: int) -> int:
            raw = env.get(name)
            if raw is None:
                return default
            try:
                return int(raw)
            except ValueError:
                raise ValueError(f"{name} must be an integer, got {raw!r}") from None

        world = get("WORLD_SIZE", 1)
        return cls(
            rank=get("RANK", 0),
            world_size=world,
            local_rank=get("LOCAL_RANK", 0),
            local_world_size=get("LOCAL_WORLD_SIZE", world),
            node_rank=get("GROUP_RANK", 0),
        )

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or "MASTER_ADDR" in os.environ


def pick_device(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise RuntimeError(f"LOCAL_RANK {local_rank} but only {count} CUDA devices are visible")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def pick_backend(requested: str, device: torch.device) -> str:
    if requested != "auto":
        if requested == "nccl" and device.type != "cuda":
            raise ValueError("--backend (TORCHJOB_BACKEND): nccl needs a CUDA device; use gloo or auto")
        return requested
    return "nccl" if device.type == "cuda" else "gloo"


def init(env: DistEnv, device: torch.device, requested_backend: str) -> str | None:
    """Join the process group; returns the backend, or None when running as a single plain process."""
    if not env.distributed:
        return None
    backend = pick_backend(requested_backend, device)
    kwargs: dict[str, object] = {}
    if backend == "nccl":
        # device_id makes NCCL connect now instead of at the first collective, so a bad GPU or network
        # fails at start-up, not minutes into training.
        kwargs["device_id"] = device
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=10), **kwargs)  # type: ignore[arg-type]
    log.info(
        "joined process group: backend=%s world_size=%d device=%s", backend, dist.get_world_size(), device
    )
    return backend


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
