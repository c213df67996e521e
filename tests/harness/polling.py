"""Polling helpers for tests against the real API: wait for state, never sleep a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    check: Callable[[], T | None], timeout_s: float = 30.0, what: str = "condition", interval_s: float = 0.1
) -> T:
    """Calls `check` until it returns something truthy and returns that; TimeoutError names `what`.

    The last value seen goes into the error, so a failure shows how far the object got.
    """
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached after {timeout_s:.0f}s (last value: {last!r})")
        time.sleep(interval_s)
