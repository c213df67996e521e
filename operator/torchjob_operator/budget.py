"""A token bucket with an injected clock (pure, so tests need no sleeping)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class TokenBucket:
    capacity: float
    rate: float  # tokens per second
    tokens: float = -1.0
    stamp: float | None = None

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.capacity

    def _refill(self, now: float) -> None:
        if self.stamp is not None:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_time(self, cost: float, now: float) -> float:
        """Seconds until `cost` tokens are available (a cost above capacity needs a full bucket)."""
        self._refill(now)
        need = min(cost, self.capacity)
        return 0.0 if self.tokens >= need else (need - self.tokens) / self.rate

    def take(self, cost: float, now: float) -> None:
        self._refill(now)
        self.tokens -= min(cost, self.capacity)

    def reserve(self, cost: float, now: float) -> float:
        """Takes `cost` tokens now, into debt if need be, and returns the seconds until the debt is paid:
        the caller sleeps once for its own slot, so waiters go in order and never wake to compete."""
        self.take(cost, now)
        return max(0.0, -self.tokens / self.rate)
