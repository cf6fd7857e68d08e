"""Several `prodclass serve` processes as replicas of one API: each with a state folder of its
own, all on one database and one Redis key space; and the sign-in helpers their tests use."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.servers import RedisSpace, free_port, start_process, stop_process, wait_until_up
from tests.serving.conftest import PRODCLASS, SERVER_JWT_SECRET, ServerProcess

PASSWORD = "replica-password-1"


# seconds a request to a replica may take: a loaded machine (tests on both cores, a replica
# starting a Dagster run) can take far over httpx's default 5 s
TIMEOUT = 60.0


def replica_env(
    name: str, folder: Path, db_url: str, space: RedisSpace, **settings: str
) -> dict[str, str]:
    """Settings of replica ``name``: its own state folder under ``folder``, the shared database
    and Redis, no model unless ``settings`` name one (``api_rate_limit_burst="4"`` sets
    PRODCLASS_API_RATE_LIMIT_BURST)."""
    return (
        {k: v for k, v in os.environ.items() if not k.startswith("PRODCLASS_")}
        | {
            "PRODCLASS_STATE_DIR": str(folder / name),
            "PRODCLASS_DATABASE_URL": db_url,
            "PRODCLASS_REDIS_URL": space.url,
            "PRODCLASS_REDIS_PREFIX": space.prefix,
            "PRODCLASS_JWT_SECRET": SERVER_JWT_SECRET,
            "PRODCLASS_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",  # no registry
            "PRODCLASS_MODEL_URI": str(folder / "no-model"),
            "PRODCLASS_MODEL_POLL_SECONDS": "0",
            "PRODCLASS_MONITORING_REFRESH_SECONDS": "0",
            "PRODCLASS_API_PREDICT_WORKERS": "1",
            "PRODCLASS_LOG_LEVEL": "WARNING",
            "NO_PROXY": "127.0.0.1,localhost",
        }
        | {f"PRODCLASS_{key.upper()}": value for key, value in settings.items()}
    )


@contextmanager
def running_replicas(
    names: str, folder: Path, db_url: str, space: RedisSpace, until: str = "/health", **settings
) -> Iterator[list[ServerProcess]]:
    """One replica per letter of ``names``, started side by side; yields them once each answers
    200 on ``until`` (``/ready``: its model loaded); all stopped at the end of the block."""
    started: list[ServerProcess] = []
    try:
        for name in names:
            env = replica_env(name, folder, db_url, space, **settings)
            port, log = free_port(), folder / f"{name}.log"
            command = [*PRODCLASS, "serve", "--host", "127.0.0.1", "--port", str(port)]
            process = start_process(command, log, env=env)
            started.append(ServerProcess(process, f"http://127.0.0.1:{port}", log))
        for name, server in zip(names, started):
            probe = f"{server.url}{until}"
            up = lambda probe=probe: httpx.get(probe, timeout=2).status_code == 200  # noqa: E731
            wait_until_up(server.process, server.log, up, f"replica {name}")
        yield started
    finally:
        for server in started:
            stop_process(server.process)


def sign_in(url: str, username: str, password: str = PASSWORD) -> httpx.Response:
    return httpx.post(
        f"{url}/token", data={"username": username, "password": password}, timeout=TIMEOUT
    )


def bearer(url: str, username: str) -> dict[str, str]:
    answer = sign_in(url, username)
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def me(url: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.get(f"{url}/users/me", headers=headers, timeout=TIMEOUT)
