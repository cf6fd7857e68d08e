"""Per-user rate limiting: at most ``burst`` requests at once and ``per_minute`` a minute on
average, counted where every API replica sees them (serving/shared_state.py).

The window is a `limits` moving window of ``burst`` requests per ``burst / rate`` seconds: a
user may send the whole burst at once, then one request per ``60 / per_minute`` seconds as
older ones leave the window; a refused request is not counted.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItemPerSecond
from limits.strategies import MovingWindowRateLimiter

from prodclass.serving.shared_state import Counters, SharedState


class RateLimiter:
    def __init__(self, per_minute: int, burst: int, shared: SharedState | None = None) -> None:
        # rounded up: the average never exceeds per_minute
        window_seconds = max(1, math.ceil(burst * 60 / per_minute))
        self.item = RateLimitItemPerSecond(burst, window_seconds, namespace="requests")
        self._counters = Counters(shared or SharedState.in_memory(), "rate-limit")

    def acquire(self, key: str) -> int:
        """0 when the request may go, else the seconds to wait before retrying."""

        def attempt(limiter: MovingWindowRateLimiter) -> int:
            if limiter.hit(self.item, key):
                return 0
            frees_at = limiter.get_window_stats(self.item, key).reset_time
            return max(1, math.ceil(frees_at - time.time()))

        return self._counters.run(attempt)
