"""Two `prodclass serve` processes behind one address act as one API: they share a database
and a Redis server (PRODCLASS_REDIS_URL), so a token revoked on one is refused by the other on
its next request, a user's rate limit holds across both together, and failed sign-ins on
both count towards one lock. No model is needed for any of it: the servers run without one."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from prodclass.db.session import session_scope, upgrade
from prodclass.db.users import create_user
from tests.servers import RedisSpace
from tests.serving.conftest import PRODCLASS
from tests.serving.replicas import PASSWORD, bearer, me, replica_env, running_replicas, sign_in

USERS = {
    "admin": "admin",
    "alice": "client",
    "bob": "client",
    "carol": "reviewer",
    "dave": "client",
    "eve": "client",
}
PER_MINUTE, BURST = 8, 4  # 4 requests at once, then one per 7.5 s: a window of 30 s (a
# loaded machine may take seconds over the six requests that must fall in one window)
MAX_FAILURES, LOCKOUT = 3, 30
LIMITS = {
    "api_rate_limit_per_minute": str(PER_MINUTE),
    "api_rate_limit_burst": str(BURST),
    "login_max_failures": str(MAX_FAILURES),
    "login_lockout_seconds": str(LOCKOUT),
}


def shared_db(folder: Path) -> str:
    return f"sqlite:///{folder / 'shared.db'}"


@pytest.fixture
def replicas(tmp_path: Path, redis_space: RedisSpace) -> Iterator[tuple[str, str]]:
    """Replicas A and B (started side by side, no model: the routes used here need none) on a
    database holding USERS, up; stopped at the end."""
    db_url = shared_db(tmp_path)
    upgrade(db_url)
    with session_scope(db_url) as session:
        for username, role in USERS.items():
            create_user(session, username, PASSWORD, role)
    with running_replicas("ab", tmp_path, db_url, redis_space, **LIMITS) as (a, b):
        yield a.url, b.url


def test_two_replicas_act_as_one(replicas, redis_space, tmp_path):
    a, b = replicas

    # a token signed out on A is refused by B on its very next request
    bob = bearer(a, "bob")
    assert me(b, bob).status_code == 200
    assert httpx.post(f"{a}/token/revoke", headers=bob).status_code == 204
    refused = me(b, bob)
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]

    # a role changed on A voids the tokens B holds, at once; a new sign-in works
    carol = bearer(b, "carol")
    assert me(b, carol).status_code == 200
    demoted = httpx.patch(f"{a}/users/carol", json={"role": "client"}, headers=bearer(a, "admin"))
    assert demoted.status_code == 200, demoted.text
    refused = me(b, carol)
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    assert me(b, bearer(b, "carol")).json()["role"] == "client"

    # one user's requests count once, wherever they land
    alice = bearer(a, "alice")
    answers = [me(url, alice) for url in (a, b, a, b, a, b)]
    assert [answer.status_code for answer in answers] == [200] * BURST + [429] * 2
    for answer in answers[BURST:]:
        assert 1 <= int(answer.headers["Retry-After"]) <= BURST * 60 / PER_MINUTE
        assert f"rate limit of {PER_MINUTE} requests per minute" in answer.json()["detail"]
    assert me(b, bearer(b, "dave")).status_code == 200  # another user: its own window

    # failed sign-ins on both replicas lock the name on both, even for the right password
    for url in (a, b, a)[:MAX_FAILURES]:
        assert sign_in(url, "dave", "wrong-password-1").status_code == 401
    for url in (a, b):
        locked = sign_in(url, "dave")
        assert locked.status_code == 429, locked.text
        assert 0 < int(locked.headers["Retry-After"]) <= LOCKOUT
        assert "too many failed sign-ins" in locked.json()["detail"]

    # a password set from the CLI is published too: both replicas refuse the old token
    eve = bearer(a, "eve")
    assert me(b, eve).status_code == 200
    done = subprocess.run(
        [*PRODCLASS, "users", "password", "eve", "--password-stdin"],
        input="eve-new-password-1\n",
        # the same settings as the replicas
        env=replica_env("cli", tmp_path, shared_db(tmp_path), redis_space, **LIMITS),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"{redis_space.prefix}:revoked-user:eve" in redis_space.stored_keys()
    assert [me(url, eve).status_code for url in (a, b)] == [401, 401]

    # everything shared lives under the deployment's prefix and expires by itself
    with redis_space.client() as client:
        ttls = {key: client.ttl(key) for key in redis_space.stored_keys()}
    kinds = {key.split(":")[1] for key in ttls}
    assert kinds == {"rate-limit", "sign-in", "revoked-token", "revoked-user"}, ttls
    # -1 is a key without expiry; 0 or -2 is one expiring or expired since it was listed
    assert all(ttl != -1 for ttl in ttls.values()), ttls
