"""Backoff after failed sign-ins, so passwords cannot be guessed at speed.

Failures are counted per user name (whether or not the account exists: the answer must not
tell which names are real) and per client address (one address trying many names). Past the
allowed failures a key is locked for ``lockout_seconds``, doubling with each further failure
up to 15 minutes; a success clears the user name's count. Counts live in the process's memory:
with several API processes the limit applies per process, which still caps guessing.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

MAX_LOCKOUT_SECONDS = 900
FORGET_AFTER_SECONDS = 3600  # a quiet hour clears a key's failures


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0
    locked_until: float = 0.0


class LoginThrottle:
    def __init__(self, max_failures: int = 5, lockout_seconds: int = 30) -> None:
        self.max_failures = max_failures
        self.lockout_seconds = lockout_seconds
        self._keys: dict[str, _Failures] = {}
        self._lock = threading.Lock()

    def retry_after(self, username: str, address: str) -> int:
        """Seconds before this user name and address may try again (0: now)."""
        now = time.monotonic()
        with self._lock:
            entries = [self._keys.get(self._user(username)), self._keys.get(self._address(address))]
        waits = [entry.locked_until - now for entry in entries if entry is not None]
        return max(0, math.ceil(max(waits, default=0)))

    def failed(self, username: str, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key, allowed in (
                (self._user(username), self.max_failures),
                (self._address(address), self.max_failures * 4),
            ):
                entry = self._get(key, now)
                entry.count += 1
                entry.last = now
                if entry.count >= allowed:
                    delay = self.lockout_seconds * 2 ** min(entry.count - allowed, 10)
                    entry.locked_until = now + min(delay, MAX_LOCKOUT_SECONDS)
            if len(self._keys) > 100_000:  # bounded memory under a spray of random names
                self._forget(now)

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._keys.pop(self._user(username), None)

    def _get(self, key: str, now: float) -> _Failures:
        entry = self._keys.get(key)
        if entry is None or now - entry.last > FORGET_AFTER_SECONDS:
            entry = self._keys[key] = _Failures()
        return entry

    def _forget(self, now: float) -> None:
        for key in [k for k, e in self._keys.items() if now - e.last > 60 and e.locked_until < now]:
            del self._keys[key]

    @staticmethod
    def _user(username: str) -> str:
        return f"user:{username.strip().lower()}"

    @staticmethod
    def _address(address: str) -> str:
        return f"address:{address}"
