"""Request rate limits: one token bucket per key (an API key id, a client address, a key prefix), in this process.

A bucket holds up to `burst` tokens and refills at `rate` tokens a second; each request takes one. A request
that finds the bucket empty is refused with the seconds until a token is back (the gateway answers 429 with
`Retry-After`). Buckets live in one process: with several gateway replicas each allows the rate on its own.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["RateLimiter"]

#: Buckets kept at most; the least recently used is dropped first (a dropped bucket comes back full).
MAX_BUCKETS = 10_000


class RateLimiter:
    """Token buckets keyed by a string (API key id, client address...); `rate` <= 0 switches limiting off."""

    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if rate > 0 and burst < 1:
            raise ValueError("burst must be >= 1 when a rate is set")
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, updated at)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str) -> float:
        """0.0 when a token was taken for `key`; else the seconds until one is available (nothing taken)."""
        if not self.enabled:
            return 0.0
        now = self.clock()
        with self._lock:
            tokens, updated = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - updated) * self.rate)
            if tokens >= 1.0:
                tokens -= 1.0
                wait = 0.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > MAX_BUCKETS:
                self._buckets.popitem(last=False)
        return wait

    def wait(self, key: str) -> float:
        """The seconds until `key` has a token (0.0 when it has one now); takes nothing."""
        if not self.enabled:
            return 0.0
        now = self.clock()
        with self._lock:
            tokens, updated = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - updated) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def describe(self) -> str:
        """The limit in words, for error details."""
        return f"{self.rate:g} requests/s per API key (bursts of {self.burst})"
