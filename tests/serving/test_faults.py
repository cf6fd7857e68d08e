"""Faults around a real `prodclass serve` process: the database restarted under
load, the model registry down at start (with and without the local copy of the last model
served), a corrupt model at start, and SIGTERM while requests are in flight.

The API runs as users run it (a uvicorn subprocess on loopback) with the real models of
``tests/serving/conftest.py``; PostgreSQL is a private cluster this module starts and stops
(the machine's shared server is never touched), MLflow a real `mlflow server` when the test
needs the registry to come back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.servers import (
    PrivatePostgres,
    free_port,
    private_postgres,
    start_process,
    stop_process,
    tail,
    wait_for,
    wait_until_up,
)
from tests.serving.conftest import (
    PASSWORDS,
    PRODCLASS,
    ServerProcess,
    server_env,
    server_launcher,
    server_processes,
)


# ---- a private PostgreSQL cluster this module may stop and start -------------------------
@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    with private_postgres() as cluster:
        yield cluster


# ---- servers ------------------------------------------------------------------------------
def isolated(served, folder: Path, **overrides: str) -> dict[str, str]:
    """Overrides giving a server its own state dir (prediction-log spill file, model cache)
    on the shared registry and application database of ``served``."""
    return {
        "PRODCLASS_STATE_DIR": str(folder),
        "PRODCLASS_MLFLOW_TRACKING_URI": served.settings.tracking_uri,
        "PRODCLASS_DATABASE_URL": served.settings.db_url,
        **overrides,
    }


@pytest.fixture
def spawn(served, tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start `prodclass serve` and return once /health answers (ready or not); all are
    stopped at the end of the test."""
    with server_processes(served, tmp_path, until="/health") as start:
        yield start


# a drained `prodclass serve` exits 0 after SIGTERM (the CLI makes uvicorn's re-raise of the
# signal harmless); anything else means the shutdown did not finish cleanly
CLEAN_EXIT = (0,)


def ready(url: str) -> tuple[int, dict]:
    answer = httpx.get(f"{url}/ready", timeout=10)
    return answer.status_code, answer.json()


def token(url: str, role: str = "client", password: str | None = None) -> dict[str, str]:
    answer = httpx.post(
        f"{url}/token", data={"username": role, "password": password or PASSWORDS[role]}
    )
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def cli(env: dict[str, str], *args: str, stdin: str = "") -> None:
    done = subprocess.run(
        [*PRODCLASS, *args], env=env, input=stdin, text=True, capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr


def migrated_with_client(served, db_url: str) -> None:
    """`prodclass db upgrade` and a client account, as an operator prepares a database."""
    env = server_env(served, PRODCLASS_DATABASE_URL=db_url)
    cli(env, "db", "upgrade")
    cli(env, "users", "create", "client", "--role", "client", "--password-stdin",
        stdin=PASSWORDS["client"] + "\n")  # fmt: skip


def own_database(
    served, postgres, name: str, folder: Path, **overrides: str
) -> tuple[str, dict[str, str]]:
    """A fresh migrated database ``name`` on the private cluster, with a client account, and
    the overrides of a server using it (its own state dir, see ``isolated``)."""
    db_url = postgres.create_database(name)
    migrated_with_client(served, db_url)
    return db_url, isolated(served, folder, PRODCLASS_DATABASE_URL=db_url, **overrides)


def wait_log_written(url: str, timeout: float = 60.0) -> dict:
    """Wait until the API is ready and its prediction log has nothing pending."""

    def done() -> dict | None:
        code, body = ready(url)
        return body if code == 200 and body["prediction_log_backlog"] == 0 else None

    return wait_for(done, "the prediction log backlog to reach 0", timeout, every=0.5)


# ---- 1. the database restarted under load ---------------------------------------------------
def test_database_restart_under_load_loses_no_prediction(
    served, sample_products, postgres, tmp_path
):
    """PostgreSQL stops (fast shutdown: connections cut) for a few seconds while three clients
    predict. Expected: every prediction is answered 200 throughout (authorising a request
    verifies the token's signature and reads no database; the log is written off the response
    path), /ready answers 503 naming the database while it is down, and once it is back the
    prediction log writes everything it buffered: one row per answered prediction."""
    db_url, overrides = own_database(
        served,
        postgres,
        "faults_restart",
        tmp_path / "state",
        PRODCLASS_MODEL_URI=f"models:/{served.settings.registered_model_name}/{served.text_version}",
        PRODCLASS_PREDICTION_LOG_FLUSH_SECONDS="0.2",
    )
    with server_launcher(served, tmp_path) as start:
        url = start(**overrides)
        headers = token(url)  # logging in reads the database: before the outage
        stop = threading.Event()
        lock = threading.Lock()
        statuses: Counter[int] = Counter()
        answered: list[tuple[float, str]] = []  # (when, prediction id)

        def client(worker: int) -> None:
            with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
                i = worker
                while not stop.is_set():
                    fields, _ = sample_products.both[i % len(sample_products.both)]
                    answer = http.post("/predict", data=fields)
                    with lock:
                        statuses[answer.status_code] += 1
                        if answer.status_code == 200:
                            answered.append((time.monotonic(), answer.json()["prediction_id"]))
                    i += 3

        threads = [threading.Thread(target=client, args=(w,)) for w in range(3)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(2)
            down_at = time.monotonic()
            postgres.stop()
            code, body = wait_for(
                lambda: (r := ready(url))[0] == 503 and r, "/ready to report the database", 15
            )
            time.sleep(max(0.0, 4 - (time.monotonic() - down_at)))  # a few seconds down
            up_at = time.monotonic()
            postgres.start()
            time.sleep(2)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        assert set(statuses) == {200}, statuses
        during = [pid for when, pid in answered if down_at < when < up_at]
        assert len(during) >= 10, f"only {len(during)} predictions answered while down"
        assert code == 503 and body["ready"] is False
        assert any("database" in problem for problem in body["problems"]), body
        assert body["model_version"] == served.text_version  # the model is not the problem
        wait_log_written(url)
        count, ids = postgres.count_predictions(db_url)
    assert count == len(answered) and ids == {pid for _, pid in answered}


# ---- 2. the model registry down at start ----------------------------------------------------
@contextmanager
def mlflow_server(served, port: int, folder: Path) -> Iterator[str]:
    """A real `mlflow server` on ``port`` over the registry of ``served`` (artifacts are local
    files the API reads directly)."""
    url = f"http://127.0.0.1:{port}"
    log = folder / "mlflow-server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PRODCLASS_"))}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no job runner: nothing needs it
    process = start_process(  # its own group: teardown stops the server and its worker
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--backend-store-uri",
            served.settings.tracking_uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],  # fmt: skip
        log,
        env=env,
        cwd=folder,
    )
    try:
        health = lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200  # noqa: E731
        wait_until_up(process, log, health, "mlflow server")
        yield url
    finally:
        stop_process(process)


def test_registry_down_at_start_without_a_copy_is_not_ready_until_it_answers(
    served, spawn, tmp_path
):
    """MLflow does not answer (a closed port) and this API never served a model: it stays up
    (/health 200), /ready answers 503 saying the registry is unreachable and nothing is
    cached, and it keeps trying: once a real MLflow server answers on that address, it loads
    the champion from it without a restart."""
    from prodclass.registry.model_registry import champion_version

    port = free_port()  # nothing listens there
    api = spawn(
        **isolated(
            served,
            tmp_path / "state",
            PRODCLASS_MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}",
            PRODCLASS_MODEL_POLL_SECONDS="1",
        )
    )
    code, body = wait_for(
        lambda: (r := ready(api.url))[0] == 503 and "failed" in " ".join(r[1]["problems"]) and r,
        "/ready to report the failed load",
        30,
    )
    problems = " ".join(body["problems"])
    assert "model registry unreachable" in problems and "no cached model" in problems, body
    assert body["model_version"] is None
    time.sleep(3)  # the watcher retries every second meanwhile
    assert api.process.poll() is None, tail(api.log)
    assert ready(api.url)[0] == 503
    assert httpx.get(f"{api.url}/health").status_code == 200

    with mlflow_server(served, port, tmp_path):
        code, body = wait_for(
            lambda: (r := ready(api.url))[0] == 200 and r, "the API to load from MLflow", 60
        )
    assert body["model_source"] == "registry"
    assert body["model_version"] == champion_version(served.settings.registered_model_name)


def test_registry_down_at_start_serves_the_copy_of_the_last_model_served(
    served, spawn, sample_products, tmp_path
):
    """A first run serves the champion from the registry (and keeps a copy in its state dir);
    a second run on the same state dir while MLflow does not answer is ready at once with that
    copy, says so (/ready ``model_source``, /models/current ``last_load.source``) and answers
    predictions with the same version."""
    state = tmp_path / "state"
    first = spawn(**isolated(served, state))
    code, body = wait_for(lambda: (r := ready(first.url))[0] == 200 and r, "the first run", 120)
    version = body["model_version"]
    assert body["model_source"] == "registry" and version is not None
    pointer = state / "model-cache" / "last.json"
    wait_for(pointer.is_file, "the copy of the served model", 30)
    first.process.send_signal(signal.SIGTERM)
    assert first.process.wait(30) in CLEAN_EXIT
    assert json.loads(pointer.read_text())["version"] == version

    down = f"http://127.0.0.1:{free_port()}"
    second = spawn(**isolated(served, state, PRODCLASS_MLFLOW_TRACKING_URI=down))
    code, body = wait_for(
        lambda: (r := ready(second.url))[0] == 200 and r, "the run on the cached copy", 60
    )
    assert body["model_source"] == "cache" and body["model_version"] == version
    headers = token(second.url)
    current = httpx.get(f"{second.url}/models/current", headers=headers).json()
    assert current["last_load"]["source"] == "cache" and current["last_load"]["state"] == "serving"
    fields, photo = sample_products.both[0]
    answer = httpx.post(
        f"{second.url}/predict",
        data=fields,
        files={"image": ("p.jpg", photo)},
        headers=headers,
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"]["version"] == version
    assert answer.json()["inputs"] == "text+image"
    assert "serving the cached copy" in " ".join(second.log.read_text().split())  # unwrapped


# ---- 3. a corrupt model at start -------------------------------------------------------------
def test_a_corrupt_model_at_start_is_refused_and_the_api_stays_up(served, spawn, tmp_path):
    """Started on the version whose weights are corrupt, the API stays up: /health 200,
    /ready 503 naming the failed load and why (the load step, then the exception), predictions
    503 with Retry-After. (A corrupt version loaded while another serves is refused and the
    old one keeps serving: tests/serving/test_api.py::test_hot_swap_and_a_broken_version_is_
    refused.)"""
    name = served.settings.registered_model_name
    api = spawn(
        **isolated(
            served,
            tmp_path / "state",
            PRODCLASS_MODEL_URI=f"models:/{name}/{served.broken_version}",
        )
    )
    code, body = wait_for(
        lambda: (r := ready(api.url))[0] == 503 and "failed" in " ".join(r[1]["problems"]) and r,
        "/ready to report the refused model",
        60,
    )
    (problem,) = [p for p in body["problems"] if p.startswith("no model loaded")]
    assert problem.startswith("no model loaded (failed: cannot load it: "), problem
    answer = httpx.post(
        f"{api.url}/predict", data={"designation": "Piscine tubulaire"}, headers=token(api.url)
    )
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
    assert "no model" in answer.json()["detail"]
    assert api.process.poll() is None and httpx.get(f"{api.url}/health").status_code == 200


# ---- 4. SIGTERM while requests are in flight -------------------------------------------------
def metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_sigterm_during_traffic_answers_every_accepted_request_and_flushes_the_log(
    served, spawn, sample_products, postgres, tmp_path
):
    """Sixteen photo products are in the server (queued or being predicted) when it gets
    SIGTERM: each gets a complete 200 answer, the process exits 0 within uvicorn's graceful
    timeout (10 s), and the prediction log (flushed every 30 s here, so only the shutdown
    flush can write it) holds one row per answer in PostgreSQL."""
    db_url, overrides = own_database(
        served,
        postgres,
        "faults_sigterm",
        tmp_path / "state",
        PRODCLASS_PREDICTION_LOG_FLUSH_SECONDS="30",
    )
    api = spawn(**overrides)
    wait_for(lambda: ready(api.url)[0] == 200, "the API to be ready", 120)
    headers = token(api.url)
    count = 16
    results: list[httpx.Response | Exception | None] = [None] * count

    def post(i: int) -> None:
        fields, photo = sample_products.both[i % len(sample_products.both)]
        try:
            results[i] = httpx.post(
                f"{api.url}/predict",
                data=fields,
                files={"image": ("p.jpg", photo)},
                headers=headers,
                timeout=60,
            )
        except httpx.HTTPError as exc:
            results[i] = exc

    threads = [threading.Thread(target=post, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    # all in: waiting in the queue, answered (pending in the log) or on one of the 2 workers
    wait_for(
        lambda: (
            metric(api.url, "prodclass_prediction_queue_depth")
            + metric(api.url, "prodclass_prediction_log_backlog")
            >= count - 2
        ),
        "the requests to reach the server",
        30,
        every=0.05,
    )
    assert metric(api.url, "prodclass_prediction_log_backlog") < count  # still some in flight
    sent = time.monotonic()
    api.process.send_signal(signal.SIGTERM)
    code = api.process.wait(20)
    elapsed = time.monotonic() - sent
    for thread in threads:
        thread.join(30)
    assert code in CLEAN_EXIT, tail(api.log)
    assert elapsed < 10 + 5, f"exit took {elapsed:.1f} s"
    bad = [r if isinstance(r, Exception) else r.status_code for r in results if r is None or
           isinstance(r, Exception) or r.status_code != 200]  # fmt: skip
    assert not bad, bad
    ids = {r.json()["prediction_id"] for r in results}  # type: ignore[union-attr]
    assert len(ids) == count
    rows, stored = postgres.count_predictions(db_url)
    assert rows == count and stored == ids
