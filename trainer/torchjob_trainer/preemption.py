"""SIGTERM handling: note the signal, let the loop finish its step and checkpoint, bounded by a grace budget.

The handler only sets a flag, so a step in flight (and its collectives) completes normally. Ranks
agree on stopping with one all-reduce per step (see `train.py`), so a signal that reached a single
node still stops every rank at the same step and rank 0 saves. If the budget runs out first (a
peer died, a save hangs) a watchdog exits the process with 143 anyway; the previous checkpoint
stays valid because writes are atomic.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import FrameType

log = logging.getLogger(__name__)

EXIT_PREEMPTED = 128 + signal.SIGTERM  # 143: the operator treats it as retryable


class Preemption:
    def __init__(self, grace_seconds: float) -> None:
        self.grace_seconds = grace_seconds
        self.received_at: float | None = None
        self._watchdog: threading.Timer | None = None

    @property
    def requested(self) -> bool:
        return self.received_at is not None

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.received_at is not None:
            return
        self.received_at = time.monotonic()
        log.warning(
            "SIGTERM: finishing the current step, then checkpoint within %.1f s (--preemption-grace-seconds)",
            self.grace_seconds,
        )
        self._watchdog = threading.Timer(self.grace_seconds, self._expire)
        self._watchdog.daemon = True
        self._watchdog.start()

    def request(self) -> None:
        """Stop as if signalled (a peer rank was preempted)."""
        if self.received_at is None:
            self.received_at = time.monotonic()

    def remaining(self) -> float:
        if self.received_at is None:
            return self.grace_seconds
        return self.grace_seconds - (time.monotonic() - self.received_at)

    def _expire(self) -> None:
        log.error(
            "preemption grace of %.1f s ran out before the checkpoint finished; exiting", self.grace_seconds
        )
        logging.shutdown()
        os._exit(EXIT_PREEMPTED)

    def cancel(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
