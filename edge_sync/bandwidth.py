"""Bandwidth budgets and retry backoff for the uploader.

Two limits, both optional (``None`` or 0 means unlimited):

- a rate: a token bucket of ``bytes_per_second`` with ``burst_bytes`` of capacity, which
  makes the uploader wait (with an injectable ``sleep``) before an upload that would go
  over it. A single batch larger than the burst is still sent once the bucket is full, so
  a big batch slows the link down but never blocks it forever.
- a per-sync allowance: ``bytes_per_sync``. A batch that would exceed what is left of it
  is deferred to the next sync (the uploader spends the allowance in priority order, so
  alerts go first). The first batch of a sync is always allowed, so every sync makes
  progress even when one batch is bigger than the allowance.

``Backoff`` is exponential backoff with full jitter (delay uniformly drawn from
``[0, min(cap, base * 2**attempt)]``), the scheme that spreads a fleet's retries best.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class BandwidthBudget:
    """What one device may send: a rate (token bucket) and an allowance per sync (bytes)."""

    bytes_per_second: int | None = None
    burst_bytes: int | None = None  # bucket capacity; default: one second of rate
    bytes_per_sync: int | None = None

    def __post_init__(self) -> None:
        for name in ("bytes_per_second", "burst_bytes", "bytes_per_sync"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ValueError(f"BandwidthBudget.{name} must be >= 0 (0 or None: unlimited), got {v}")


class TokenBucket:
    """A byte-rate limiter: ``take(n)`` waits until ``n`` bytes of budget have accrued."""

    def __init__(
        self,
        rate: float,
        capacity: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"TokenBucket rate must be positive bytes/s, got {rate}")
        self.rate = float(rate)
        self.capacity = float(capacity or rate)
        self._clock, self._sleep = clock, sleep
        self._tokens = self.capacity
        self._at = clock()
        self.waited_s = 0.0

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def wait_time(self, n: int) -> float:
        """Seconds until ``n`` bytes may go (a request above capacity needs a full bucket)."""
        self._refill()
        need = min(float(n), self.capacity)
        return max(0.0, (need - self._tokens) / self.rate)

    def take(self, n: int) -> float:
        """Spend ``n`` bytes, sleeping first if needed; returns the seconds waited."""
        wait = self.wait_time(n)
        if wait > 0:
            self._sleep(wait)
            self.waited_s += wait
            self._refill()
            # an injected clock may not move with sleep: the wait itself earned the tokens
            self._tokens = max(self._tokens, min(float(n), self.capacity))
        self._tokens -= n  # may go negative for an over-capacity batch: the debt slows the next one
        return wait


class SyncAllowance:
    """The bytes left in this sync's allowance (``None``: unlimited)."""

    def __init__(self, bytes_per_sync: int | None) -> None:
        self.left = bytes_per_sync or None
        self.spent = 0

    def allows(self, n: int) -> bool:
        return self.left is None or self.spent == 0 or n <= self.left

    def spend(self, n: int) -> None:
        self.spent += n
        if self.left is not None:
            self.left = max(0, self.left - n)

    @property
    def exhausted(self) -> bool:
        return self.left is not None and self.left == 0


class Backoff:
    """Exponential backoff with full jitter, capped; ``reset()`` after a success."""

    def __init__(
        self, base_s: float = 1.0, cap_s: float = 300.0, *, rng: random.Random | None = None
    ) -> None:
        if base_s <= 0 or cap_s < base_s:
            raise ValueError(f"Backoff needs 0 < base_s <= cap_s, got base_s={base_s}, cap_s={cap_s}")
        self.base_s, self.cap_s = base_s, cap_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        """The upper bound of the next delay."""
        return min(self.cap_s, self.base_s * (2 ** min(self.attempt, 62)))

    def next_delay(self) -> float:
        """The next delay (uniform in [0, ceiling]); counts one more failure."""
        delay = self._rng.uniform(0.0, self.ceiling())
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
