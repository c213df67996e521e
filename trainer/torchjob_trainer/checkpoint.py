"""Checkpoints: rank 0 writes atomically (temp file, fsync, rename); resume picks the latest valid one.

A checkpoint is `ckpt-<global step, 9 digits>.pt` holding the model, optimizer, epoch, the steps done
in that epoch (the sampler position: that many batches of the epoch's shuffled order are skipped on
resume) and the global step. A crash mid-write leaves only a `.tmp` file, never a torn checkpoint;
files that fail to load are skipped with a warning.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
NAME_RE = re.compile(r"^ckpt-(\d+)\.pt$")


@dataclass(frozen=True)
class Position:
    """Where training stands: `epoch` (0-based), batches done in it, and the global step count."""

    epoch: int
    step_in_epoch: int
    global_step: int


def checkpoint_path(directory: Path, global_step: int) -> Path:
    return directory / f"ckpt-{global_step:09d}.pt"


def save(
    directory: Path,
    *,
    model_state: dict[str, Any],
    optimizer_state: dict[str, Any],
    position: Position,
    extra: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(directory, position.global_step)
    tmp = final.with_name(final.name + f".{os.getpid()}.tmp")
    payload = {
        "format": FORMAT_VERSION,
        "model": model_state,
        "optimizer": optimizer_state,
        "epoch": position.epoch,
        "step_in_epoch": position.step_in_epoch,
        "global_step": position.global_step,
        "extra": extra or {},
    }
    with open(tmp, "wb") as fh:
        torch.save(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    _fsync_dir(directory)
    prune(directory, keep)
    return final


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(global step, path), newest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := NAME_RE.match(p.name))]
    return sorted(found, reverse=True)


def prune(directory: Path, keep: int) -> None:
    for _, path in list_checkpoints(directory)[keep:]:
        path.unlink(missing_ok=True)
    for tmp in directory.glob("ckpt-*.tmp"):
        # Stale temp files from a writer that died; ours was renamed already.
        tmp.unlink(missing_ok=True)


def load(path: Path) -> dict[str, Any]:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: not a torchjob checkpoint (format {FORMAT_VERSION})")
    for key in ("model", "optimizer", "epoch", "step_in_epoch", "global_step"):
        if key not in payload:
            raise ValueError(f"{path}: missing {key!r}")
    return payload


def load_latest(directory: Path) -> dict[str, Any] | None:
    """The newest checkpoint that loads; corrupt ones are logged and skipped."""
    for _, path in list_checkpoints(directory):
        try:
            payload = load(path)
        except Exception as exc:
            log.warning("skipping unreadable checkpoint %s: %s", path, exc)
            continue
        log.info("resuming from %s (global step %d)", path, payload["global_step"])
        payload["path"] = str(path)
        return payload
    return None


def position_of(payload: dict[str, Any], *, world_size: int, batch_size: int) -> Position:
    """The checkpoint's position for a run of `world_size` ranks with `batch_size` each.

    Every rank's sampler shards one shuffled order of the epoch (rank r takes indices r, r + world, ...),
    so after s steps the ranks together have trained the first s x batch x world samples of it, whatever
    the world size. An elastic job that resumes with another world size (or batch size) therefore
    converts the steps done in the epoch through that sample count, rounding down: at most one step's
    samples are trained twice, none are skipped.
    """
    position = Position(int(payload["epoch"]), int(payload["step_in_epoch"]), int(payload["global_step"]))
    extra = payload.get("extra") or {}
    saved_world, saved_batch = int(extra.get("world_size") or 0), int(extra.get("batch_size") or 0)
    if not saved_world or not saved_batch or (saved_world, saved_batch) == (world_size, batch_size):
        return position
    samples = position.step_in_epoch * saved_batch * saved_world
    step = samples // (batch_size * world_size)
    log.info(
        "checkpoint from %d ranks x batch %d, resuming on %d x %d: step %d of the epoch is step %d now",
        saved_world,
        saved_batch,
        world_size,
        batch_size,
        position.step_in_epoch,
        step,
    )
    return Position(position.epoch, step, position.global_step)
