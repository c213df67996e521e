from __future__ import annotations

import pytest
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure
from torchjob_trainer.launch import exit_code_of, find_console_script, first_failure_code, shutdown_timeout


def _failure(rank: int, code: int, ts: int) -> ProcessFailure:
    f = ProcessFailure(local_rank=rank, pid=1000 + rank, exitcode=code, error_file="/nonexistent")
    f.timestamp = ts
    return f


@pytest.mark.parametrize(
    ("code", "expected"), [(143, 143), (7, 7), (-9, 137), (-15, 143), (0, 1), (300, 255)]
)
def test_exit_code_of(code: int, expected: int) -> None:
    assert exit_code_of(_failure(0, code, 1)) == expected


def test_first_failure_wins() -> None:
    error = ChildFailedError("train", {0: _failure(0, 1, ts=20), 1: _failure(1, 143, ts=10)})
    assert first_failure_code(error) == 143


def test_shutdown_timeout_follows_preemption_grace() -> None:
    assert shutdown_timeout({"TORCHJOB_PREEMPTION_GRACE_SECONDS": "45"}) == 55
    assert shutdown_timeout({}) is None
    assert shutdown_timeout({"TORCHJOB_PREEMPTION_GRACE_SECONDS": "x"}) is None
    assert (
        shutdown_timeout({"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "5", "TORCHJOB_PREEMPTION_GRACE_SECONDS": "45"})
        is None
    )


def test_console_scripts_run_without_python() -> None:
    assert find_console_script("torchjob-train") is not None
    assert find_console_script("train.py") is None
    assert find_console_script("no-such-program-xyz") is None
