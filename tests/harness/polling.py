"""The one polling helper of the test suite: wait for state, never sleep a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Watched(Protocol):
    """A process a wait depends on: once it exits, waiting longer is pointless."""

    def exit_reason(self) -> str | None:
        """Why the process can no longer satisfy the wait (`exited with 1`), or None while it runs."""
        ...

    def failure(self, message: str) -> Exception:
        """The error to raise, carrying what the process logged."""
        ...


def eventually(
    check: Callable[[], T | None],
    timeout_s: float = 30.0,
    what: str = "condition",
    interval_s: float = 0.1,
    *,
    watch: Watched | None = None,
) -> T:
    """Calls `check` until it returns something truthy and returns that.

    Fails with TimeoutError naming `what` and the last value seen, so a failure shows how far the object
    got; with `watch`, fails at once when that process exits, with the process's own error and log.
    """
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while True:
        last = check()
        if last:
            return last
        reason = watch.exit_reason() if watch is not None else None
        if reason is not None and watch is not None:
            raise watch.failure(f"{reason} before {what}")
        if time.monotonic() > deadline:
            message = f"{what}: not reached after {timeout_s:.0f}s (last value: {last!r})"
            raise watch.failure(message) if watch is not None else TimeoutError(message)
        time.sleep(interval_s)
