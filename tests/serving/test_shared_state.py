"""What API replicas share through a real Redis server: two instances of each component stand
for two processes (tests/serving/test_replicas.py runs two real servers). Also: without Redis
the same answers come from memory, and a Redis that stops answering slows and stops nothing."""

from __future__ import annotations

import time

import pytest
from prometheus_client import REGISTRY

from prodclass.serving.login_throttle import LoginThrottle
from prodclass.serving.rate_limit import RateLimiter
from prodclass.serving.shared_revocations import SharedRevocations
from prodclass.serving.shared_state import SharedState
from prodclass.settings import Settings
from tests.servers import RedisSpace, free_port


def _replica(space: RedisSpace) -> SharedState:
    """What one API process builds from its settings."""
    return SharedState.from_settings(Settings(redis_url=space.url, redis_prefix=space.prefix))


def _failures_counted() -> float:
    return REGISTRY.get_sample_value("prodclass_shared_state_failures_total") or 0.0


def test_two_replicas_share_one_rate_limit(redis_space):
    a, b = (RateLimiter(60, 4, _replica(redis_space)) for _ in range(2))
    answers = [limiter.acquire("client") for limiter in (a, b, a, b, a, b)]
    assert answers[:4] == [0, 0, 0, 0]
    assert all(1 <= wait <= 4 for wait in answers[4:]), answers  # 4 per 4 s, counted together
    assert b.acquire("reviewer") == 0  # another user has its own window
    keys = redis_space.stored_keys()
    assert keys and all(key.startswith(f"{redis_space.prefix}:rate-limit:") for key in keys)


@pytest.mark.parametrize("where", ["memory", "redis"])
def test_the_rate_limit_answers_the_same_with_or_without_redis(where, request):
    shared = (
        SharedState.in_memory()
        if where == "memory"
        else _replica(request.getfixturevalue("redis_space"))
    )
    limiter = RateLimiter(per_minute=60, burst=3, shared=shared)
    assert [limiter.acquire("client") for _ in range(3)] == [0, 0, 0]
    assert limiter.acquire("client") == 3  # the oldest of 3 requests leaves a 3 s window


def test_sign_in_failures_on_two_replicas_lock_the_name_and_double(redis_space):
    a, b = (LoginThrottle(4, 1, _replica(redis_space)) for _ in range(2))
    for throttle in (a, b, a, b):
        assert throttle.retry_after("Target", "10.0.0.1") == 0
        throttle.failed("target ", "10.0.0.1")  # the name as typed: case and spaces ignored
    assert a.retry_after("target", "10.0.0.2") == 1  # the name is locked, from any address
    assert b.retry_after("TARGET", "10.0.0.2") == 1
    time.sleep(1.2)  # the lock ends; the next failure locks twice as long
    assert b.retry_after("target", "10.0.0.1") == 0
    b.failed("target", "10.0.0.1")
    assert a.retry_after("target", "10.0.0.3") == 2
    a.succeeded("target")  # a success on one replica clears the name on all
    assert b.retry_after("target", "10.0.0.3") == 0
    keys = redis_space.stored_keys()
    assert keys and all(key.startswith(f"{redis_space.prefix}:sign-in:") for key in keys)


def test_one_address_trying_many_names_is_locked_on_every_replica(redis_space):
    a, b = (LoginThrottle(2, 30, _replica(redis_space)) for _ in range(2))
    for number in range(8):  # four times the failures of one name, each name failing once
        (a, b)[number % 2].failed(f"name-{number}", "10.0.0.9")
    assert 0 < a.retry_after("someone-else", "10.0.0.9") <= 30
    assert b.retry_after("someone-else", "10.0.0.10") == 0  # another address is free


def test_keys_expire_with_what_they_count(redis_space):
    throttle = LoginThrottle(1, 30, _replica(redis_space))
    throttle.failed("target", "10.0.0.1")
    RateLimiter(60, 2, _replica(redis_space)).acquire("client")
    with redis_space.client() as client:
        ttls = {key: client.ttl(key) for key in redis_space.stored_keys()}
    assert len(ttls) == 4, ttls  # failures by name and by address, the name's lock, requests
    assert all(0 < ttl <= 3600 for ttl in ttls.values()), ttls


def test_a_revocation_written_by_one_replica_is_seen_by_the_other(redis_space):
    a, b = (SharedRevocations(_replica(redis_space)) for _ in range(2))
    now = time.time()
    assert not b.covers("token-1", "client", now)
    a.add_token("token-1", now + 60)
    assert b.covers("token-1", "client", now)
    assert not b.covers("token-2", "client", now)
    b.add_user("client", now, now + 60)
    assert a.covers("token-2", "client", now - 1)  # issued before the cut-off
    assert not a.covers("token-2", "client", now + 1)  # a sign-in after it
    a.add_user("client", now - 30, now + 30)  # a late writer of an older cut-off
    assert b.covers("token-2", "client", now - 1), "the cut-off moved back"
    with redis_space.client() as client:
        ttls = {key.rsplit(":", 2)[-2]: client.ttl(key) for key in redis_space.stored_keys()}
    assert ttls.keys() == {"revoked-token", "revoked-user"}
    assert all(55 < ttl <= 62 for ttl in ttls.values()), ttls  # the later cut-off's expiry


def test_redis_down_slows_nothing_and_counters_go_on_in_memory(caplog):
    closed = f"redis://127.0.0.1:{free_port()}/0"
    shared = SharedState.from_settings(Settings(redis_url=closed, redis_prefix="unused"))
    failures = _failures_counted()
    start = time.monotonic()
    limiter = RateLimiter(60, 2, shared)
    assert [limiter.acquire("client") for _ in range(3)][:2] == [0, 0]
    assert limiter.acquire("client") >= 1  # still limited, by this process
    throttle = LoginThrottle(1, 30, shared)
    throttle.failed("target", "10.0.0.1")
    assert throttle.retry_after("target", "10.0.0.1") == 30
    revocations = SharedRevocations(shared)
    revocations.add_token("token-1", time.time() + 60)  # reported, not raised
    assert not revocations.covers("token-1", "client", time.time())  # the table's copy decides
    assert time.monotonic() - start < 3
    assert _failures_counted() > failures
    assert "Redis unavailable" in caplog.text
