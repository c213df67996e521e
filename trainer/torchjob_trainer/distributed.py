"""Process-group setup from torchrun's env: device from LOCAL_RANK, NCCL on CUDA (eager init), gloo on CPU."""

from __future__ import annotations

import datetime
import gc
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


def device_index(local_rank: int, device_count: int) -> int:
    """The CUDA device of a local rank: `local_rank % device_count`.

    With more processes per node than visible GPUs, ranks share GPUs round-robin (4 processes on 2 GPUs:
    cuda:0, cuda:1, cuda:0, cuda:1), the order users expect from `LOCAL_RANK`. CUDA_VISIBLE_DEVICES is
    left as the container runtime set it, so every process sees every GPU of the pod.
    """
    return local_rank % device_count


def pick_device(
    local_rank: int, local_world_size: int = 1, memory_fraction: float | None = None
) -> torch.device:
    if not torch.cuda.is_available():
        if memory_fraction is not None:
            log.warning("--cuda-memory-fraction (TORCHJOB_CUDA_MEMORY_FRACTION) ignored: no CUDA device")
        return torch.device("cpu")
    count = torch.cuda.device_count()
    device = torch.device("cuda", device_index(local_rank, count))
    if local_world_size > count:
        log.info(
            "%d processes share %d GPUs: local rank %d uses %s (local_rank %% device_count)",
            local_world_size,
            count,
            local_rank,
            device,
        )
    torch.cuda.set_device(device)
    apply_memory_fraction(memory_fraction, device)
    return device


def apply_memory_fraction(fraction: float | None, device: torch.device) -> None:
    """Cap this process's caching allocator at `fraction` of the device's memory (GPU sharing).

    Beyond the cap an allocation raises CUDA out-of-memory in this process instead of starving the
    other processes on the GPU. It bounds torch's allocator, not the CUDA context (a few hundred MB).
    """
    if fraction is None or device.type != "cuda":
        return
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    log.info("CUDA memory of this process capped at %.0f%% of %s", fraction * 100, device)


def gpus_shared(device: torch.device, local_world_size: int, device_count: int) -> bool:
    return device.type == "cuda" and local_world_size > device_count


def pick_backend(requested: str, device: torch.device, *, shared_gpu: bool = False) -> str:
    """NCCL on CUDA, gloo on CPU; with ranks sharing a GPU, which NCCL refuses, gloo (auto) or an error."""
    if requested == "nccl" and device.type != "cuda":
        raise ValueError("--backend (TORCHJOB_BACKEND): nccl needs a CUDA device; use gloo or auto")
    if requested == "nccl" and shared_gpu:
        raise ValueError(
            "--backend (TORCHJOB_BACKEND): nccl refuses two ranks on one GPU, and this node runs more "
            "processes (LOCAL_WORLD_SIZE, the TrainingJob's procsPerNode) than it has GPUs; set "
            "procsPerNode to at most the GPU count, or use --backend gloo or auto (gloo when GPUs are shared)"
        )
    if requested != "auto":
        return requested
    if shared_gpu:
        log.warning(
            "ranks share GPUs (more processes per node than GPUs), which NCCL refuses: backend auto -> gloo "
            "(collectives go through host memory; slower than NCCL)"
        )
        return "gloo"
    return "nccl" if device.type == "cuda" else "gloo"


def init(env: DistEnv, device: torch.device, requested_backend: str) -> str | None:
    """Join the process group; returns the backend, or None when running as a single plain process."""
    if not env.distributed:
        return None
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    backend = pick_backend(
        requested_backend, device, shared_gpu=gpus_shared(device, env.local_world_size, count)
    )
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
    """Leave the process group, after freeing what still uses it.

    A DDP reducer keeps its process group alive past destroy_process_group; one left in a reference cycle
    (with a failed step's traceback) is freed at interpreter exit instead, where gloo's threads abort the
    process ("terminate called without an active exception"). Collect it while the group still exists.
    """
    gc.collect()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
