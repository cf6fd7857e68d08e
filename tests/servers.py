"""Real servers for tests: PostgreSQL (a fresh database per module), Redis (keys of its own per
test), an S3-compatible server (moto's, over HTTP; a bucket per test), free loopback ports,
processes started in their own group, log tails.

PostgreSQL is the server named by ``PRODCLASS_TEST_POSTGRES_URL`` when it answers; otherwise a
private cluster of our own (initdb in a temporary folder, a free loopback port) started from
Debian's server binaries, so the PostgreSQL tests run on a real server on any machine that has
the ``postgresql`` package. Without either they skip with the reason, and fail instead when
``PRODCLASS_REQUIRE_POSTGRES=1`` (CI). Redis likewise: ``PRODCLASS_TEST_REDIS_URL`` when it
answers, else a private ``redis-server`` (package ``redis-server``) for the session;
``PRODCLASS_REQUIRE_REDIS=1`` turns a skip into a failure."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

POSTGRES_ENV = "PRODCLASS_TEST_POSTGRES_URL"
REQUIRE_ENV = "PRODCLASS_REQUIRE_POSTGRES"
REDIS_ENV = "PRODCLASS_TEST_REDIS_URL"
REQUIRE_REDIS_ENV = "PRODCLASS_REQUIRE_REDIS"


# the newest PostgreSQL server binaries Debian installed (initdb, pg_ctl), for a private cluster
PG_BIN = max(
    Path("/usr/lib/postgresql").glob("*/bin"),
    key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
    default=Path("/usr/lib/postgresql/bin"),
)


# ---- a private PostgreSQL cluster ---------------------------------------------------------
@dataclass
class PrivatePostgres:
    """A PostgreSQL 15 cluster of our own (trust auth, loopback, a free port): the test may
    stop and start it; the machine's shared server is never touched."""

    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        # PostgreSQL refuses to run as root: run its tools as the postgres account then
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run(
            [*prefix, *args], capture_output=True, text=True, timeout=60, cwd=self.root
        )
        assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout}\n{done.stderr}"

    def init(self) -> None:
        self._run(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
            "--auth=trust", "-E", "UTF8", "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def count_predictions(self, url: str) -> tuple[int, set[str]]:
        import psycopg

        with psycopg.connect(url, connect_timeout=5) as conn:
            ids = {str(row[0]) for row in conn.execute("SELECT id FROM predictions")}
            (count,) = conn.execute("SELECT COUNT(*) FROM predictions").fetchone()
        return count, ids


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """Start a private cluster (stopped and deleted at the end of the block)."""
    if not (PG_BIN / "initdb").is_file():
        unavailable(f"no PostgreSQL server binaries (initdb) in {PG_BIN}: make test-deps")
    # not under pytest's tmp_path: its parents are private to root, the postgres account
    # must reach the cluster's folder
    root = Path(tempfile.mkdtemp(prefix="prodclass-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    cluster = PrivatePostgres(root, free_port())
    cluster.init()
    cluster.start()
    try:
        yield cluster
    finally:
        with suppress(AssertionError):  # already stopped by a failed test
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


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


# Ports handed out by ``free_port`` stay claimed (an flock on a file named after the port, held
# by this process until it exits): two pytest-xdist workers never get the same port, even when
# the first has not bound it yet.
PORT_CLAIMS = Path(tempfile.gettempdir()) / "prodclass-test-ports"
_claimed: list[int] = []  # open file descriptors holding the claims


def _claim(port: int) -> bool:
    import fcntl

    PORT_CLAIMS.mkdir(exist_ok=True)
    fd = os.open(PORT_CLAIMS / f"{port}.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _claimed.append(fd)
    return True


def free_port() -> int:
    """A loopback port nobody listens on and no other test process has been handed."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if _claim(port):
            return port
    raise RuntimeError("no free loopback port could be claimed in 100 tries")


def tail(path: Path, lines: int = 60) -> str:
    if not path.is_file():
        return "(no log written)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _answers(url: str) -> str | None:
    """None when the server at ``url`` answers a query, else why not."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"cannot connect to {url}: {exc}".strip()
    return None


@pytest.fixture(scope="session")
def fallback_postgres() -> Iterator[PrivatePostgres]:
    """A private cluster for the whole session, used when no configured server answers."""
    with private_postgres() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def postgres_url(request: pytest.FixtureRequest) -> str:
    """The admin URL of a PostgreSQL server that answers: the configured one, else a private
    cluster started for the session."""
    url = os.environ.get(POSTGRES_ENV, "").strip()
    why = _answers(url) if url else f"{POSTGRES_ENV} is unset"
    if why is None:
        return url
    if not (PG_BIN / "initdb").is_file():
        unavailable(f"{why}; and no server binaries (initdb) in {PG_BIN}: make test-deps")
    cluster: PrivatePostgres = request.getfixturevalue("fallback_postgres")
    return cluster.url()


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


# ---- Redis ------------------------------------------------------------------------------
def redis_unavailable(reason: str) -> None:
    """Skip, or fail when the environment says Redis is required (CI)."""
    message = (
        f"no Redis server: set {REDIS_ENV} to a reachable server, e.g. "
        f"redis://127.0.0.1:6379/0, or install redis-server ({reason})"
    )
    if os.environ.get(REQUIRE_REDIS_ENV) == "1":
        pytest.fail(f"{REQUIRE_REDIS_ENV}=1 but {message}", pytrace=False)
    pytest.skip(message)


def _redis_answers(url: str) -> str | None:
    """None when the Redis server at ``url`` answers PING, else why not."""
    import redis

    try:
        with redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2) as client:
            client.ping()
    except (redis.RedisError, ValueError) as exc:
        return f"cannot reach {url}: {exc}"
    return None


@contextmanager
def private_redis() -> Iterator[str]:
    """A ``redis-server`` of our own on a free loopback port, nothing saved to disk; yields its
    URL and stops it at the end of the block."""
    binary = shutil.which("redis-server")
    if binary is None:
        redis_unavailable("no redis-server command: make test-deps")
    root = Path(tempfile.mkdtemp(prefix="prodclass-redis-"))
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    process = start_process(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(root)],
        root / "redis.log",
    )  # fmt: skip
    try:
        wait_for(
            lambda: process.poll() is not None or _redis_answers(url) is None,
            "redis-server to answer",
            timeout=30,
            detail=lambda: tail(root / "redis.log"),
        )
        assert process.poll() is None, f"redis-server exited:\n{tail(root / 'redis.log')}"
        yield url
    finally:
        stop_process(process)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def fallback_redis() -> Iterator[str]:
    """A private Redis for the whole session, used when no configured server answers."""
    with private_redis() as url:
        yield url


@pytest.fixture(scope="session")
def redis_server(request: pytest.FixtureRequest) -> str:
    """The URL of a Redis server that answers: the configured one, else a private one."""
    url = os.environ.get(REDIS_ENV, "").strip()
    why = _redis_answers(url) if url else f"{REDIS_ENV} is unset"
    if why is None:
        return url
    if shutil.which("redis-server") is None:
        redis_unavailable(f"{why}; and no redis-server command: make test-deps")
    return request.getfixturevalue("fallback_redis")


@dataclass
class RedisSpace:
    """A Redis server and a key prefix no other test uses (a shared server may hold others'
    keys: only these are read and deleted)."""

    url: str
    prefix: str

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5)

    def stored_keys(self) -> list[str]:
        with self.client() as client:
            return sorted(key.decode() for key in client.scan_iter(f"{self.prefix}:*"))


@contextmanager
def new_redis_space(url: str) -> Iterator[RedisSpace]:
    """A key prefix of its own on the server at ``url``; its keys deleted at the end."""
    space = RedisSpace(url, f"prodclass-test-{uuid.uuid4().hex[:12]}")
    yield space
    with space.client() as client:
        if keys := list(client.scan_iter(f"{space.prefix}:*")):
            client.delete(*keys)


@pytest.fixture
def redis_space(redis_server: str) -> Iterator[RedisSpace]:
    with new_redis_space(redis_server) as space:
        yield space


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


def start_process(
    command: list[str],
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen:
    """Start a server in a process group of its own, output to ``log``; ``stop_process`` ends
    the whole group, so workers and children it spawns go with it."""
    with log.open("wb") as out:
        return subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_process(process: subprocess.Popen, timeout: float = 20.0) -> int | None:
    """SIGTERM to the process's group, SIGKILL after ``timeout`` s; returns the exit code."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # the leader may be gone while its children linger: make sure the group is empty
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    return process.returncode


# ---- an S3-compatible server ------------------------------------------------------------
# what moto accepts (it checks nothing); our code reads them from the environment, as boto3 does
DUMMY_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class S3Bucket:
    """A fresh bucket on the test S3 server, read here with boto3 directly (not our code)."""

    endpoint: str
    name: str

    def client(self):
        import boto3

        return boto3.session.Session().client("s3", endpoint_url=self.endpoint, **{
            "aws_access_key_id": DUMMY_AWS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": DUMMY_AWS["AWS_SECRET_ACCESS_KEY"],
            "region_name": DUMMY_AWS["AWS_DEFAULT_REGION"],
        })  # fmt: skip

    def objects(self) -> dict[str, bytes]:
        """Every object in the bucket, by key."""
        s3 = self.client()
        keys = [
            item["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.name)
            for item in page.get("Contents", [])
        ]
        return {key: s3.get_object(Bucket=self.name, Key=key)["Body"].read() for key in keys}


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server (``moto_server``) on a free loopback port for the session, spoken to
    over HTTP like MinIO; yields its endpoint URL."""
    import sys

    import httpx

    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    binary = Path(sys.executable).with_name("moto_server")
    command = [str(binary), "-H", "127.0.0.1", "-p", str(port)]
    process = start_process(command, log, env=os.environ | DUMMY_AWS)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(process, log, lambda: httpx.get(url, timeout=2), "moto_server", 60)
        yield url
    finally:
        stop_process(process, timeout=10)


@pytest.fixture
def s3_bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> S3Bucket:
    """An empty bucket of its own for the test, and the AWS variables that reach it."""
    for name, value in DUMMY_AWS.items():
        monkeypatch.setenv(name, value)
    return new_bucket(s3_server)


def new_bucket(endpoint: str) -> S3Bucket:
    """An empty bucket with a unique name on the S3 server at ``endpoint``."""
    bucket = S3Bucket(endpoint, f"prodclass-test-{uuid.uuid4().hex[:12]}")
    bucket.client().create_bucket(Bucket=bucket.name)
    return bucket


PROMETHEUS = shutil.which("prometheus")


@contextmanager
def running_prometheus(
    folder: Path, api_url: str, rule_file: Path, alertmanager_url: str | None = None
) -> Iterator[str]:
    """Debian's Prometheus with deploy/prometheus's shipped config, scraping ``api_url`` and
    evaluating ``rule_file`` every second (and sending alerts to ``alertmanager_url``, in place
    of the compose service the shipped config names); yields its URL."""
    import httpx
    import yaml

    from tests.conftest import PROJECT_ROOT

    shipped = yaml.safe_load((PROJECT_ROOT / "deploy/prometheus/prometheus.yml").read_text())
    shipped["global"]["scrape_interval"] = "1s"
    shipped["global"]["evaluation_interval"] = "1s"
    shipped["rule_files"] = [str(rule_file)]
    if alertmanager_url is not None:
        (manager,) = shipped["alerting"]["alertmanagers"]
        assert manager["static_configs"] == [{"targets": ["alertmanager:9093"]}]
        manager["static_configs"] = [{"targets": [alertmanager_url.split("//")[1]]}]
    targets = folder / "targets"
    targets.mkdir()
    (targets / "api.yml").write_text(yaml.safe_dump([{"targets": [api_url.split("//")[1]]}]))
    shipped["scrape_configs"][0]["file_sd_configs"] = [{"files": [str(targets / "*.yml")]}]
    config = folder / "prometheus.yml"
    config.write_text(yaml.safe_dump(shipped))
    port = free_port()
    log = folder / "prometheus.log"
    process = start_process(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        ready = lambda: httpx.get(f"{url}/-/ready").status_code == 200  # noqa: E731
        wait_until_up(process, log, ready, "prometheus", timeout=60)
        yield url
    finally:
        stop_process(process)
