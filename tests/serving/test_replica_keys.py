"""Encrypted fields across replicas: two real `prodclass serve` processes in production mode, one
PostgreSQL database, a state folder each and the same PRODCLASS_ENCRYPTION_KEYS read the user
emails each other stored; a replica without the keys refuses to start (production) or to
store and show emails (development), saying what to set, and never generates a key of its own
that the other replicas would not have."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import httpx
import psycopg
import pytest

from prodclass.db.session import session_scope, upgrade
from prodclass.db.users import create_user
from prodclass.settings import get_settings
from tests.servers import RedisSpace, free_port, with_database
from tests.serving.conftest import PRODCLASS
from tests.serving.replicas import PASSWORD, bearer, replica_env, running_replicas

pytestmark = pytest.mark.postgres

KEYS = f"k1:{base64.b64encode(os.urandom(32)).decode()}"
PRODUCTION = {"environment": "production", "encryption_keys": KEYS}


@pytest.fixture(scope="module")
def db_url(postgres_url: str, database: str) -> str:
    """The replicas' database: the schema and an admin."""
    url = with_database(postgres_url, database)
    upgrade(url)
    with session_scope(url) as session:
        create_user(session, "admin", PASSWORD, "admin")
    return url


def _stored_email(db_url: str, username: str) -> str:
    with psycopg.connect(db_url, connect_timeout=5) as conn:
        found = conn.execute("SELECT email_encrypted FROM users WHERE username = %s", (username,))
        return found.fetchone()[0]


def _generated_keys(folder: Path) -> list[Path]:
    return list(folder.rglob("encryption.key"))


def test_replicas_with_the_same_keys_read_each_others_encrypted_fields(
    db_url: str, redis_space: RedisSpace, tmp_path: Path
):
    with running_replicas("ab", tmp_path, db_url, redis_space, **PRODUCTION) as (a, b):
        on_a, on_b = bearer(a.url, "admin"), bearer(b.url, "admin")
        made = httpx.post(
            f"{a.url}/users",
            json={"username": "buyer", "password": PASSWORD, "role": "client",
                  "email": "buyer@shop.test"},
            headers=on_a,
        )  # fmt: skip
        assert made.status_code == 201, made.text
        stored = _stored_email(db_url, "buyer")
        assert stored.startswith("v1:k1:") and "buyer@shop.test" not in stored  # encrypted

        read = httpx.get(f"{b.url}/users/buyer", headers=on_b)
        assert read.status_code == 200, read.text
        assert read.json()["email"] == "buyer@shop.test"

        changed = httpx.patch(
            f"{b.url}/users/buyer", json={"email": "orders@shop.test"}, headers=on_b
        )
        assert changed.status_code == 200, changed.text
        listed = httpx.get(f"{a.url}/users", headers=on_a)
        assert listed.status_code == 200, listed.text
        assert {u["username"]: u["email"] for u in listed.json()}["buyer"] == "orders@shop.test"
    assert _generated_keys(tmp_path) == []  # neither replica made a key of its own


def test_a_replica_without_the_keys_refuses_saying_what_to_set(
    db_url: str, redis_space: RedisSpace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # production: it does not start
    env = replica_env("c", tmp_path, db_url, redis_space, environment="production")
    done = subprocess.run(
        [*PRODCLASS, "serve", "--host", "127.0.0.1", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    said = " ".join((done.stdout + done.stderr).split())  # rich wraps long lines
    assert done.returncode == 1, said
    assert "PRODCLASS_ENCRYPTION_KEYS is required in production: set it to `id:base64key`" in said

    # an email stored with the deployment's keys (as a replica that has them stores it)
    monkeypatch.setenv("PRODCLASS_ENCRYPTION_KEYS", KEYS)
    get_settings.cache_clear()
    try:
        with session_scope(db_url) as session:
            create_user(session, "seller", PASSWORD, "client", "seller@shop.test")
    finally:
        get_settings.cache_clear()
    assert _stored_email(db_url, "seller").startswith("v1:k1:")

    # development on the shared database: it starts, but stores and shows no email with a key
    # of its own (the other replicas could not read what it wrote, nor it theirs)
    with running_replicas("d", tmp_path, db_url, redis_space) as (d,):
        admin = bearer(d.url, "admin")
        for answer in (
            httpx.get(f"{d.url}/users/seller", headers=admin),
            httpx.patch(f"{d.url}/users/admin", json={"email": "a@shop.test"}, headers=admin),
        ):
            assert answer.status_code == 503, answer.text
            detail = answer.json()["detail"]
            assert "PRODCLASS_ENCRYPTION_KEYS is required when PRODCLASS_DATABASE_URL" in detail
        assert httpx.get(f"{d.url}/users/me", headers=admin).status_code == 200  # no email
    assert _generated_keys(tmp_path) == []
    assert _stored_email(db_url, "admin") is None  # the refused change stored nothing
