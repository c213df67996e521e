"""A checkpoint write the OS refuses: the previous checkpoint stays, the temp file goes, one clear error.

Faults are injected only at the OS boundary (`os.open`, `os.write`, `os.fsync`, `os.replace`, `mkdir`),
so the real torch.save and the real atomic-write path run.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from torchjob_core import constants
from torchjob_trainer import checkpoint, termination, train
from torchjob_trainer.checkpoint import CheckpointWriteError, Position
from unit.checkpoints import save_linear


def _save(directory: Path, step: int) -> Path:
    # 64 wide: a checkpoint of several writes, so a fault can land mid-file.
    return save_linear(directory, Position(epoch=0, step_in_epoch=step, global_step=step), width=64)


def _oserror(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def _fail_tmp_writes_after(monkeypatch: pytest.MonkeyPatch, budget: int, code: int) -> None:
    """Writes to checkpoint temp files succeed for `budget` bytes, then fail with `code` (a full disk)."""
    real_open, real_write = os.open, os.write
    tmp_fds: set[int] = set()
    left = [budget]

    def fake_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        fd = real_open(path, flags, *args, **kwargs)
        if str(path).endswith(".tmp"):
            tmp_fds.add(fd)
        return fd

    def fake_write(fd: int, data: Any) -> int:
        if fd not in tmp_fds:
            return real_write(fd, data)
        if left[0] <= 0:
            raise _oserror(code)
        n = min(len(memoryview(data)), left[0])
        left[0] -= n
        return real_write(fd, memoryview(data)[:n])

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "write", fake_write)


def _assert_previous_kept(directory: Path, previous: Path) -> None:
    assert sorted(p.name for p in directory.iterdir()) == [previous.name]  # no temp file left
    payload = checkpoint.load_latest(directory)
    assert payload is not None and payload["path"] == str(previous)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_disk_that_fills_mid_write_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    previous = _save(tmp_path, 10)
    _fail_tmp_writes_after(monkeypatch, budget=4096, code=code)
    with pytest.raises(CheckpointWriteError) as raised:
        _save(tmp_path, 20)
    assert raised.value.cause.errno == code
    assert raised.value.directory == tmp_path
    monkeypatch.undo()
    _assert_previous_kept(tmp_path, previous)


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_a_directory_that_refuses_new_files_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    previous = _save(tmp_path, 10)
    real_open = os.open

    def refuse(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_CREAT:
            raise _oserror(code)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(CheckpointWriteError) as raised:
        _save(tmp_path, 20)
    assert raised.value.cause.errno == code
    monkeypatch.undo()
    _assert_previous_kept(tmp_path, previous)


@pytest.mark.parametrize(
    "call",
    ["fsync", "replace"],  # NFS reports a full disk at fsync; a rename can fail on quota or EROFS
)
def test_a_failure_after_the_data_is_written_removes_the_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    previous = _save(tmp_path, 10)

    def fail(*_args: Any, **_kwargs: Any) -> None:
        raise _oserror(errno.ENOSPC)

    monkeypatch.setattr(os, call, fail)
    with pytest.raises(CheckpointWriteError, match="ENOSPC"):
        _save(tmp_path, 20)
    monkeypatch.undo()
    _assert_previous_kept(tmp_path, previous)


def test_a_directory_that_cannot_be_created_is_a_write_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*_args: Any, **_kwargs: Any) -> None:
        raise _oserror(errno.EROFS)

    monkeypatch.setattr(os, "mkdir", fail)
    with pytest.raises(CheckpointWriteError, match="Read-only file system"):
        _save(tmp_path / "new", 1)


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.ENOSPC, "No space left on device (ENOSPC); free space or grow the volume"),
        (errno.EDQUOT, "(EDQUOT); raise the quota"),
        (errno.EROFS, "Read-only file system (EROFS); mount it read-write"),
        (errno.EACCES, "Permission denied (EACCES); make it writable"),
    ],
)
def test_the_error_is_one_line_naming_the_directory_and_the_cause(code: int, words: str) -> None:
    text = checkpoint.describe(Path("/checkpoints"), _oserror(code))
    assert text.startswith("cannot write a checkpoint to /checkpoints: ")
    assert words in text
    assert "previous checkpoint" in text
    assert "\n" not in text


def test_a_failed_checkpoint_logs_one_line_writes_the_termination_message_and_exits_73(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log_file = tmp_path / "termination-log"
    log_file.write_text("stale")
    error = CheckpointWriteError(tmp_path, _oserror(errno.ENOSPC))
    with caplog.at_level(logging.ERROR):
        code = train.checkpoint_failed(error, str(log_file))
    assert code == constants.EXIT_CHECKPOINT_WRITE_FAILED == 73
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [str(error)]
    assert log_file.read_text() == str(error)


def test_the_termination_message_is_never_created_and_is_capped(tmp_path: Path) -> None:
    absent = tmp_path / "dev" / "termination-log"
    termination.write(str(absent), "x")
    assert not absent.exists()  # a local run has no such file: nothing appears in /dev
    present = tmp_path / "termination-log"
    present.touch()
    termination.write(str(present), "y" * 10_000)
    assert present.read_bytes() == b"y" * termination.MAX_BYTES
    termination.write(None, "ignored")  # --termination-log '' turns it off


def test_unrelated_os_writes_still_work_while_the_fault_is_injected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Guards the fake itself: only checkpoint temp files fail.
    _fail_tmp_writes_after(monkeypatch, budget=0, code=errno.ENOSPC)
    fd = os.open(tmp_path / "other", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        assert os.write(fd, b"ok") == 2
    finally:
        os.close(fd)
