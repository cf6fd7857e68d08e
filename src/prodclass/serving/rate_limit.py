"""Per-user rate limiting: a token bucket per user name (per process)."""

from __future__ import annotations

import math
import threading
import time


class RateLimiter:
    def __init__(self, per_minute: int, burst: int) -> None:
        self.rate = per_minute / 60.0  # tokens per second
        self.capacity = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # user -> (tokens, last time)
        self._lock = threading.Lock()

    def acquire(self, key: str) -> int:
        """0 when the request may go, else the seconds to wait before retrying."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0
            self._buckets[key] = (tokens, now)
            return max(1, math.ceil((1 - tokens) / self.rate))
