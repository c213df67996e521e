from __future__ import annotations

import pytest
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure
from torch.distributed.elastic.rendezvous import (
    RendezvousConnectionError,
    RendezvousHandler,
    RendezvousInfo,
    RendezvousParameters,
)
from torch.distributed.elastic.rendezvous.registry import get_rendezvous_handler
from torchjob_trainer.launch import (
    STORE_LOSS_BACKEND,
    STORE_LOSS_GRACE_KEY,
    StoreLossTolerantHandler,
    exit_code_of,
    find_console_script,
    first_failure_code,
    shutdown_timeout,
)


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


class _LostStore(RendezvousHandler):
    """A c10d handler whose store host has gone away."""

    def get_backend(self) -> str:
        return "c10d"

    def next_rendezvous(self) -> RendezvousInfo:
        raise RendezvousConnectionError("gone")

    def is_closed(self) -> bool:
        return False

    def set_closed(self) -> None:
        pass

    def num_nodes_waiting(self) -> int:
        raise RendezvousConnectionError("The connection to the C10d store has failed.")

    def get_run_id(self) -> str:
        return "job"

    def shutdown(self) -> bool:
        return False


def test_a_lost_store_reads_as_nobody_waiting_for_the_grace_then_fails() -> None:
    now = [100.0]
    handler = StoreLossTolerantHandler(_LostStore(), grace_s=30, clock=lambda: now[0])
    assert handler.num_nodes_waiting() == 0
    now[0] += 30
    assert handler.num_nodes_waiting() == 0
    now[0] += 1
    with pytest.raises(RendezvousConnectionError):
        handler.num_nodes_waiting()
    # Everything else is the c10d handler's own answer.
    assert (handler.get_run_id(), handler.is_closed(), handler.shutdown()) == ("job", False, False)
    with pytest.raises(RendezvousConnectionError):
        handler.next_rendezvous()


def test_the_launcher_backend_wraps_a_real_c10d_handler() -> None:
    params = RendezvousParameters(
        STORE_LOSS_BACKEND, "localhost:0", "unit", 1, 1, None, **{STORE_LOSS_GRACE_KEY: 7, "is_host": True}
    )
    handler = get_rendezvous_handler(params)
    try:
        assert isinstance(handler, StoreLossTolerantHandler)
        assert handler.get_backend() == STORE_LOSS_BACKEND
        assert handler.num_nodes_waiting() == 0
        assert handler.get_run_id() == "unit"
    finally:
        handler.shutdown()
