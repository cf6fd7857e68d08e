"""Real servers for tests: the machine's PostgreSQL (a fresh database per module), free
loopback ports, log tails. PostgreSQL tests skip with the reason when no server answers, and
fail instead when ``PRODCLASS_REQUIRE_POSTGRES=1`` (CI)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

POSTGRES_ENV = "PRODCLASS_TEST_POSTGRES_URL"
REQUIRE_ENV = "PRODCLASS_REQUIRE_POSTGRES"


def unavailable(reason: str) -> None:
    """Skip, or fail when the environment says PostgreSQL is required (CI)."""
    message = (
        f"no PostgreSQL server: set {POSTGRES_ENV} to a reachable server, e.g. "
        f"postgresql://postgres@127.0.0.1:5432/postgres ({reason})"
    )
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {message}", pytrace=False)
    pytest.skip(message)


def with_database(url: str, database: str, driver: str | None = None) -> str:
    """The same server URL pointing at another database (and optionally a SQLAlchemy driver)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url).set(database=database)
    if driver is not None:
        parsed = parsed.set(drivername=driver)
    return parsed.render_as_string(hide_password=False)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 60) -> str:
    if not path.is_file():
        return "(no log written)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="module")
def postgres_url() -> str:
    """The admin URL of the PostgreSQL server, checked to answer."""
    url = os.environ.get(POSTGRES_ENV, "").strip()
    if not url:
        unavailable(f"{POSTGRES_ENV} is unset")
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        unavailable(f"cannot connect to {url}: {exc}".strip())
    return url


@pytest.fixture(scope="module")
def database(postgres_url: str) -> Iterator[str]:
    """A fresh database with a unique name; yields its name and drops it afterwards."""
    import psycopg
    from psycopg import sql

    name = f"prodclass_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, connect_timeout=5, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(postgres_url, connect_timeout=5, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def wait_for(condition, what: str, timeout: float = 60.0, every: float = 0.2, detail=None):
    """Poll ``condition()`` until it returns something truthy and return that; fail the test
    after ``timeout`` seconds, saying what was awaited (and ``detail()``, e.g. a server log)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(every)
    pytest.fail(
        f"timed out after {timeout:.0f} s waiting for {what}" + (f":\n{detail()}" if detail else "")
    )


def wait_until_up(process, log: Path, probe, what: str, timeout: float = 120.0) -> None:
    """Poll ``probe()`` (True when the server answers as expected) until it does; fail with
    the server's log if the process exits or the time runs out."""
    import httpx

    def up() -> bool:
        if process.poll() is not None:
            pytest.fail(f"{what} exited {process.returncode}:\n{tail(log)}")
        try:
            return bool(probe())
        except httpx.HTTPError:
            return False

    wait_for(up, f"{what} to answer", timeout, every=0.3, detail=lambda: tail(log))
