"""A rank whose metrics port is taken retries with backoff, then logs one line and trains without metrics."""

from __future__ import annotations

import logging
import socket
import urllib.request

import pytest
from torchjob_trainer.metrics import RankLabels, TrainerMetrics


def test_a_busy_port_is_retried_then_given_up_with_one_line(caplog: pytest.LogCaptureFixture) -> None:
    metrics = TrainerMetrics(RankLabels("j", 0, 0, 0), cuda=False)
    slept: list[float] = []
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen(1)
        port = int(sock.getsockname()[1])
        with caplog.at_level(logging.ERROR):
            assert metrics.serve(port, 0, sleep=slept.append) is None
    assert slept == [0.5, 1.0, 2.0]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert f"cannot serve on port {port} after 4 tries" in errors[0]
    assert "training goes on without metrics" in errors[0]


def test_a_port_freed_during_the_backoff_is_served() -> None:
    metrics = TrainerMetrics(RankLabels("j", 0, 0, 0), cuda=False)
    sock = socket.socket()
    sock.bind(("0.0.0.0", 0))
    sock.listen(1)
    port = int(sock.getsockname()[1])

    def free_it(_: float) -> None:
        sock.close()

    assert metrics.serve(port, 0, sleep=free_it) == port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert b"torchjob_trainer_samples_total" in resp.read()
