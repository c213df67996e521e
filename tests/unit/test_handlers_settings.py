"""Operator flags and the per-job request budget."""

from __future__ import annotations

import pytest
from torchjob_operator import settings
from torchjob_operator.budget import TokenBucket


def test_flags() -> None:
    cfg = settings.from_args(["--namespace", "a", "--namespace", "b", "--metrics-port", "0", "--standalone"])
    assert cfg.namespaces == ("a", "b") and cfg.metrics_port == 0 and cfg.standalone
    peered = settings.from_args(["--peering", "torchjob"])
    assert peered.peering == "torchjob" and not peered.standalone
    assert peered.priority >= 1  # replicas draw distinct priorities: Kopf pauses equal ones
    assert settings.from_args(["--peering", "x", "--priority", "7"]).priority == 7
    assert settings.from_args(["--max-concurrent-passes", "4"]).max_concurrent_passes == 4
    with pytest.raises(SystemExit):
        settings.from_args(["--max-concurrent-passes", "0"])


def test_peering_and_standalone_exclude_each_other() -> None:
    with pytest.raises(SystemExit):
        settings.from_args(["--peering", "x", "--standalone"])


def test_token_bucket_refills_and_caps() -> None:
    bucket = TokenBucket(capacity=10, rate=2)
    assert bucket.wait_time(10, now=0) == 0
    bucket.take(10, now=0)
    assert bucket.wait_time(4, now=0) == 2
    assert bucket.wait_time(4, now=2) == 0
    assert bucket.wait_time(50, now=2) == 3  # more than the capacity waits for a full bucket
    assert settings.RequestBudget().burst(nodes=4) == 28
