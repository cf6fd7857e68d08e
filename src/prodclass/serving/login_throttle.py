"""Backoff after failed sign-ins, so passwords cannot be guessed at speed.

Failures are counted per user name (whether or not the account exists: the answer must not
tell which names are real) and per client address (one address trying many names), where every
API replica counts them (serving/shared_state.py: Redis, else this process). Once a key has had
its allowed failures within the hour it is locked for ``lockout_seconds``, doubling with each
further failure up to 15 minutes; a success clears the user name's failures and lock.

The failures are a `limits` moving window of the last hour; a lock is a counter that expires
when the lock ends, so the storage forgets both by itself.
"""

from __future__ import annotations

import hashlib
import math
import time

from limits import RateLimitItemPerSecond
from limits.strategies import MovingWindowRateLimiter

from prodclass.serving.shared_state import Counters, SharedState

MAX_LOCKOUT_SECONDS = 900
FORGET_AFTER_SECONDS = 3600  # failures older than an hour no longer count
MAX_DOUBLINGS = 10  # past these, the lockout stays at its longest: no need to count further
ADDRESS_FACTOR = 4  # one address may fail for several people behind it


class LoginThrottle:
    def __init__(
        self, max_failures: int = 5, lockout_seconds: int = 30, shared: SharedState | None = None
    ) -> None:
        self.max_failures = max_failures
        self.lockout_seconds = lockout_seconds
        self._allowed = {"user": max_failures, "address": max_failures * ADDRESS_FACTOR}
        self._failures = {
            kind: RateLimitItemPerSecond(
                allowed + MAX_DOUBLINGS, FORGET_AFTER_SECONDS, namespace=f"failures-{kind}"
            )
            for kind, allowed in self._allowed.items()
        }
        self._counters = Counters(shared or SharedState.in_memory(), "sign-in")

    def retry_after(self, username: str, address: str) -> int:
        """Seconds before this user name and address may try again (0: now)."""
        keys = [_key("user", username), _key("address", address)]

        def attempt(limiter: MovingWindowRateLimiter) -> int:
            ends = [limiter.storage.get_expiry(_lock(kind, who)) for kind, who in keys]
            return max(0, math.ceil(max(ends) - time.time()))

        return self._counters.run(attempt)

    def failed(self, username: str, address: str) -> None:
        keys = [_key("user", username), _key("address", address)]

        def attempt(limiter: MovingWindowRateLimiter) -> None:
            for kind, who in keys:
                item = self._failures[kind]
                limiter.hit(item, who)  # refused once full: the lockout is at its longest
                count = item.amount - limiter.get_window_stats(item, who).remaining
                beyond = count - self._allowed[kind]
                if beyond >= 0:
                    delay = self.lockout_seconds * 2 ** min(beyond, MAX_DOUBLINGS)
                    limiter.storage.incr(_lock(kind, who), min(delay, MAX_LOCKOUT_SECONDS))

        self._counters.run(attempt)

    def succeeded(self, username: str) -> None:
        kind, who = _key("user", username)

        def attempt(limiter: MovingWindowRateLimiter) -> None:
            limiter.clear(self._failures[kind], who)
            limiter.storage.clear(_lock(kind, who))

        self._counters.run(attempt)


def _key(kind: str, value: str) -> tuple[str, str]:
    """(kind, digest): any text a client sends becomes a short key of fixed shape."""
    text = value.strip().lower() if kind == "user" else value
    return kind, hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _lock(kind: str, who: str) -> str:
    return f"locked/{kind}/{who}"
