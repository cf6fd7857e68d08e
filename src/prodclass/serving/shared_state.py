"""Where the API keeps what its replicas must agree on (sign-in failures, request counts,
revoked tokens): the Redis server of ``PRODCLASS_REDIS_URL``, else this process's memory.

A request never waits long on Redis: calls time out after a second, and after a failure the
server is left alone for a few seconds. Meanwhile counters go on in memory (each process counts
for itself, as on one machine) and revocations come from the database copy every process
refreshes, so an outage of Redis loosens the limits for a while but stops nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import MovingWindowRateLimiter
from redis.backoff import NoBackoff
from redis.retry import Retry

from prodclass.serving import metrics
from prodclass.settings import Settings

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 1.0
PAUSE_AFTER_FAILURE_SECONDS = 5.0
T = TypeVar("T")


class SharedState:
    """The Redis connection of this process (None: one machine, memory only), the prefix of
    its keys, and whether Redis is given a rest after a failure."""

    def __init__(self, client: redis.Redis | None, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._paused_until = 0.0
        self._lock = threading.Lock()

    @classmethod
    def in_memory(cls) -> SharedState:
        """No Redis: everything stays in this process (one machine)."""
        return cls(None, "prodclass")

    @classmethod
    def from_settings(cls, settings: Settings) -> SharedState:
        if settings.redis_url is None:
            return cls.in_memory()
        client = redis.Redis.from_url(
            settings.redis_url,
            socket_timeout=TIMEOUT_SECONDS,
            socket_connect_timeout=TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 0),  # the fallback is ours: no retries with backoff
        )
        return cls(client, settings.redis_prefix)

    def describe(self) -> str:
        """Where the shared state lives, for the log (a URL's password left out)."""
        if self.client is None:
            return "this process's memory"
        where = self.client.connection_pool.connection_kwargs
        address = where.get("path") or f"{where.get('host')}:{where.get('port')}"
        return f"Redis at {address}/{where.get('db', 0)}, keys {self.prefix}:*"

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def storage(self, name: str) -> Storage | None:
        """A `limits` storage in Redis for the counters called ``name`` (None without Redis)."""
        if self.client is None:
            return None
        return RedisStorage(
            "redis://", connection_pool=self.client.connection_pool, key_prefix=self.key(name)
        )

    @property
    def available(self) -> bool:
        """Redis is configured and not resting after a failure."""
        return self.client is not None and time.monotonic() >= self._paused_until

    def failed(self, what: str, exc: Exception) -> None:
        """Count a failure and leave Redis alone for a few seconds (warned once per pause)."""
        metrics.SHARED_STATE_FAILURES.inc()
        with self._lock:
            warn = time.monotonic() >= self._paused_until
            self._paused_until = time.monotonic() + PAUSE_AFTER_FAILURE_SECONDS
        if warn:
            log.warning(
                "Redis unavailable (%s: %s): %s for the next %.0f s",
                type(exc).__name__,
                exc,
                what,
                PAUSE_AFTER_FAILURE_SECONDS,
            )

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


class Counters:
    """`limits` moving windows in the shared storage, and in memory while it is unavailable."""

    def __init__(self, shared: SharedState, name: str) -> None:
        self.shared = shared
        self.name = name
        storage = shared.storage(name)
        self._shared = MovingWindowRateLimiter(storage) if storage is not None else None
        self._local = MovingWindowRateLimiter(MemoryStorage())

    def run(self, attempt: Callable[[MovingWindowRateLimiter], T]) -> T:
        """``attempt`` on the shared counters, or on this process's when Redis fails."""
        if self._shared is not None and self.shared.available:
            try:
                return attempt(self._shared)
            except redis.RedisError as exc:
                self.shared.failed(f"{self.name} counters kept in this process's memory", exc)
        return attempt(self._local)
