"""Checkpoints: rank 0 writes atomically (temp file, fsync, rename); resume picks the latest valid one.

A checkpoint is one file per global step (named by `torchjob_core.checkpoint_files`) holding the
model, optimizer, epoch, the steps done in that epoch (the sampler position: that many batches of the
epoch's shuffled order are skipped on resume) and the global step. A crash mid-write leaves only a
`.tmp` file, never a torn checkpoint; files that fail to load are skipped with a warning. A write the
OS refuses (read-only, full, over quota, no permission) removes its temp file and raises
`CheckpointWriteError`; the previous checkpoint is untouched, because only a complete, fsynced file is
ever renamed over a checkpoint name.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import torch
from torchjob_core import checkpoint_files

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Position:
    """Where training stands: `epoch` (0-based), batches done in it, and the global step count."""

    epoch: int
    step_in_epoch: int
    global_step: int


def checkpoint_path(directory: Path, global_step: int) -> Path:
    return directory / checkpoint_files.file_name(global_step)


# What to do about each cause, in the one line the trainer logs.
_HINTS = {
    errno.ENOSPC: "free space or grow the volume",
    errno.EDQUOT: "raise the quota or free space",
    errno.EROFS: "mount it read-write",
    errno.EACCES: "make it writable by the trainer's user (pod securityContext.fsGroup)",
    errno.EPERM: "make it writable by the trainer's user (pod securityContext.fsGroup)",
}


class CheckpointWriteError(Exception):
    """The OS refused a checkpoint write into `directory`; the previous checkpoint stays valid."""

    def __init__(self, directory: Path, cause: OSError) -> None:
        self.directory = directory
        self.cause = cause
        super().__init__(describe(directory, cause))


def describe(directory: Path, cause: OSError) -> str:
    """One line naming the directory, the cause (strerror and errno name) and what to do."""
    name = errno.errorcode.get(cause.errno or 0, "unknown errno")
    hint = _HINTS.get(cause.errno or 0, "check the volume")
    why = cause.strerror or str(cause)
    return (
        f"cannot write a checkpoint to {directory}: {why} ({name}); {hint}. "
        "The previous checkpoint, if any, is kept."
    )


def save(
    directory: Path,
    *,
    model_state: dict[str, Any],
    optimizer_state: dict[str, Any],
    position: Position,
    extra: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    final = checkpoint_path(directory, position.global_step)
    payload = {
        "format": FORMAT_VERSION,
        "model": model_state,
        "optimizer": optimizer_state,
        "epoch": position.epoch,
        "step_in_epoch": position.step_in_epoch,
        "global_step": position.global_step,
        "extra": extra or {},
    }
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _write_atomically(final, payload)
    except OSError as exc:
        raise CheckpointWriteError(directory, exc) from exc
    prune(directory, keep)
    return final


def _write_atomically(final: Path, payload: dict[str, Any]) -> None:
    """Temp file in the same directory, fsync, rename over `final`, fsync the directory.

    On any failure the temp file is removed (best effort: on a read-only mount there is none), so a
    full volume is not left fuller."""
    tmp = final.with_name(final.name + f".{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _serialize(payload, fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(final.parent)


def _serialize(payload: dict[str, Any], fd: int) -> None:
    """torch.save straight to `fd`, re-raising the OSError of a refused write.

    A write that fails mid-file leaves torch's zip writer inconsistent, and its clean-up then raises a
    RuntimeError ("unexpected pos ...") over the OSError; the sink keeps the OSError and its errno."""
    sink = _FdSink(fd)
    try:
        torch.save(payload, cast("IO[bytes]", sink))  # torch needs only write()
    except RuntimeError:
        if sink.error is not None:
            raise sink.error from None
        raise


class _FdSink:
    """The write-only file object torch.save writes into: a raw descriptor, so no buffer is left to fail
    later at close; it remembers the first OSError."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        view = memoryview(data).cast("B")
        done = 0
        try:
            while done < len(view):
                done += os.write(self._fd, view[done:])
        except OSError as exc:
            self.error = self.error or exc
            raise
        return done

    def flush(self) -> None:
        pass


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(global step, path), newest first."""
    return checkpoint_files.listed(directory)


def prune(directory: Path, keep: int) -> None:
    for _, path in list_checkpoints(directory)[keep:]:
        path.unlink(missing_ok=True)
    for tmp in directory.glob(checkpoint_files.TEMP_GLOB):
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
