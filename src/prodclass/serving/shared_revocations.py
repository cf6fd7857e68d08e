"""Revocations published in Redis, so every API replica refuses a revoked token on its next
request (the database stays the record; each replica's copy of it follows within seconds).

One key per revoked token and one per user whose older tokens are void (the cut-off time),
each expiring when the tokens it concerns would have expired anyway.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import redis

from prodclass.serving.shared_state import SharedState

# a user's cut-off (and with it its expiry) only ever moves forward, whichever replica writes
# last
_LATER_CUTOFF = """
local current = tonumber(redis.call('get', KEYS[1])) or 0
if tonumber(ARGV[1]) > current then
    redis.call('set', KEYS[1], ARGV[1], 'exat', ARGV[2])
    return 1
end
return 0
"""


class SharedRevocations:
    """Revocations in Redis. Its failures are reported, not raised: the table (and each
    process's copy of it) still holds every revocation."""

    def __init__(self, state: SharedState) -> None:
        if state.client is None:
            raise ValueError("shared revocations need Redis (PRODCLASS_REDIS_URL)")
        self.state = state
        self.client: redis.Redis = state.client
        self._later_cutoff = self.client.register_script(_LATER_CUTOFF)

    def add_token(self, jti: str, expires_at: float) -> None:
        self._write(lambda: self.client.set(self._token(jti), b"1", exat=_expiry(expires_at)))

    def add_user(self, username: str, not_before: float, expires_at: float) -> None:
        """Every token of ``username`` issued before ``not_before`` is void."""
        key, args = self._user(username), [repr(not_before), _expiry(expires_at)]
        self._write(lambda: self._later_cutoff(keys=[key], args=args))

    def covers(self, jti: str, username: str, issued_at: float) -> bool:
        """Whether Redis holds a revocation of this token (False while it does not answer)."""
        if not self.state.available:
            return False
        try:
            token, cutoff = self.client.mget(self._token(jti), self._user(username))
        except redis.RedisError as exc:
            self.state.failed("revocations checked against the database copy only", exc)
            return False
        return token is not None or (cutoff is not None and issued_at < float(cutoff))

    def _write(self, call: Callable[[], object]) -> None:
        try:
            call()
        except redis.RedisError as exc:
            self.state.failed("revocations passed on through the database only", exc)

    def _token(self, jti: str) -> str:
        return self.state.key("revoked-token", jti)

    def _user(self, username: str) -> str:
        return self.state.key("revoked-user", username)


def _expiry(expires_at: float) -> int:
    """A whole second after ``expires_at`` (and in the future: Redis drops a past one at once)."""
    return max(math.ceil(expires_at), int(time.time())) + 1
