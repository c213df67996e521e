"""Which workers are forked from the preloaded server, and how a forked worker's start-up reads."""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import sys
from collections.abc import Iterator

import pytest
import torchjob_trainer
from torchjob_trainer import forkstart, main, startup


@pytest.fixture
def worker_call(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`main.worker` with its argv taken as the config; the start method it resets is restored after."""
    monkeypatch.setattr(main, "from_sources", lambda argv: argv)
    previous = multiprocessing.get_start_method(allow_none=True)
    try:
        yield
    finally:
        multiprocessing.set_start_method(previous, force=True)


def test_the_trainer_is_forked_by_default() -> None:
    forked = forkstart.forked_worker
    assert forkstart.trainer_entrypoint("/venv/bin/torchjob-train", ["--x"], {}) == (forked, ["--x"])
    setting = {forkstart.WORKER_START_ENV: " Forkserver "}
    assert forkstart.trainer_entrypoint("torchjob-train", [], setting) == (forked, [])


def test_the_trainer_module_run_by_this_python_is_forked_too() -> None:
    got = forkstart.trainer_entrypoint(sys.executable, ["-u", "-m", "torchjob_trainer", "--x", "1"], {})
    assert got == (forkstart.forked_worker, ["--x", "1"])
    assert forkstart.trainer_entrypoint("/other/python", ["-u", "-m", "torchjob_trainer"], {}) is None


def test_other_commands_and_the_exec_setting_run_as_torchrun_does() -> None:
    assert forkstart.trainer_entrypoint(sys.executable, ["-u", "train.py"], {}) is None
    assert forkstart.trainer_entrypoint("my-train", [], {}) is None
    exec_setting = {forkstart.WORKER_START_ENV: "exec"}
    assert forkstart.trainer_entrypoint("torchjob-train", [], exec_setting) is None


def test_an_unknown_start_method_names_the_setting() -> None:
    with pytest.raises(forkstart.StartMethodError, match=r"TORCHJOB_WORKER_START='spawn'.*forkserver, exec"):
        forkstart.start_method({forkstart.WORKER_START_ENV: "spawn"})


def test_the_preload_list_imports() -> None:
    for name in forkstart.PRELOAD:
        importlib.import_module(name)


def test_a_forked_process_counts_from_its_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    forked_at = torchjob_trainer.IMPORTED_AT + 30.0
    monkeypatch.setattr(startup, "process_started_at", lambda: forked_at)
    clock = startup.StartupPhases.since_process_start(forked=True)
    assert clock.started_at == forked_at
    assert list(clock.phases) == ["forked"]


@pytest.mark.usefixtures("worker_call")
def test_the_worker_gives_its_loaders_the_platform_start_method(monkeypatch: pytest.MonkeyPatch) -> None:
    """A forkserver child's default start method is "forkserver"; the worker resets it first."""
    seen: list[str | None] = []

    def fake_run(_config: object, *, forked: bool) -> int:
        assert forked
        seen.append(multiprocessing.get_start_method(allow_none=True))
        return 0

    monkeypatch.setattr(main, "run", fake_run)
    multiprocessing.set_start_method("forkserver", force=True)
    assert main.worker("--model", "mlp") == 0
    assert seen == [None]


@pytest.mark.usefixtures("worker_call")
def test_the_worker_leaves_at_once_with_a_failing_code(monkeypatch: pytest.MonkeyPatch) -> None:
    exits: list[int] = []

    def fake_exit(code: int) -> None:
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(main, "run", lambda _config, forked: 143)
    monkeypatch.setattr(main, "exit_now", fake_exit)
    with pytest.raises(SystemExit):
        main.worker()
    assert exits == [143]


def test_a_worker_failure_is_logged_without_the_agents_traceback() -> None:
    try:
        raise RuntimeError("where the agent noticed")
    except RuntimeError:
        exc_info = sys.exc_info()
    name, failed = forkstart.FUNCTION_WORKERS_LOGGER, "failed (exitcode: %s)"
    record = logging.LogRecord(name, logging.ERROR, "api.py", 1, failed, (73,), exc_info)
    assert forkstart.without_traceback(record)
    assert record.exc_info is None
    other = logging.LogRecord("x", logging.ERROR, "api.py", 1, "something else", (), exc_info)
    assert forkstart.without_traceback(other) and other.exc_info is not None


@pytest.mark.usefixtures("worker_call")
def test_user_code_that_exits_0_is_a_success(monkeypatch: pytest.MonkeyPatch) -> None:
    def exits(_config: object, *, forked: bool) -> int:
        raise SystemExit(0)

    monkeypatch.setattr(main, "run", exits)
    assert forkstart.forked_worker() == 0
