"""A real `prodclass serve` for the benchmarks: its environment, its database migrated with the
benchmark's client account, the server on a free loopback port once /ready answers, what it
serves by default (the fast text model, real titles), a closed-loop load of /predict and
whether it logged what it answered."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from prodclass.settings import get_settings

PRODCLASS = str(Path(sys.executable).with_name("prodclass"))
# how the prediction workers run, passed on from the benchmark's environment when given
TUNING = (
    "PRODCLASS_API_PREDICT_WORKERS",
    "PRODCLASS_API_TORCH_THREADS",
    "PRODCLASS_API_MAX_BATCH_SIZE",
    "PRODCLASS_API_QUEUE_LIMIT",
    "PRODCLASS_OCR_WORKERS",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(model_uri: str, state_dir: Path, **overrides: str) -> dict[str, str]:
    """A server's settings: none of this process's PRODCLASS_ ones but the configured MLflow
    store, data folder and prediction tuning; ``model_uri``; a fresh ``state_dir`` (cold
    caches) holding the SQLite database (PRODCLASS_DATABASE_URL, to override for a shared
    one); a throwaway signing key; no rate limit worth the name. ``overrides`` last."""
    settings = get_settings()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRODCLASS_")} | {
        "PRODCLASS_MLFLOW_TRACKING_URI": settings.tracking_uri,
        "PRODCLASS_DATA_DIR": str(settings.data_dir.resolve()),
        "PRODCLASS_MODEL_URI": model_uri,
        "PRODCLASS_STATE_DIR": str(state_dir),
        "PRODCLASS_DATABASE_URL": f"sqlite:///{state_dir.resolve() / 'prodclass.db'}",
        "PRODCLASS_JWT_SECRET": "bench-only-" + os.urandom(16).hex(),
        "PRODCLASS_API_RATE_LIMIT_PER_MINUTE": "10000000",
        "PRODCLASS_API_RATE_LIMIT_BURST": "1000000",
        "PRODCLASS_LOG_LEVEL": "WARNING",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    env |= {key: os.environ[key] for key in TUNING if key in os.environ}
    return env | overrides


def prepare_database(env: dict[str, str], user: str, password: str) -> None:
    """Migrate the database of ``env`` and create the benchmark's client account in it."""
    for args, stdin in (
        (["db", "upgrade"], ""),
        (["users", "create", user, "--role", "client", "--password-stdin"], password + "\n"),
    ):
        done = subprocess.run(
            [PRODCLASS, *args], env=env, input=stdin, text=True, capture_output=True
        )
        if done.returncode:
            raise SystemExit(f"prodclass {' '.join(args)} failed:\n{done.stderr[-3000:]}")


def start_server(
    env: dict[str, str], log: Path, timeout: float = 300
) -> tuple[subprocess.Popen, str]:
    """`prodclass serve` with ``env`` on a free loopback port and its URL, once /ready answers
    (exits with the server's log otherwise). The database must be prepared."""
    port = free_port()
    process = subprocess.Popen(
        [PRODCLASS, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit(f"server not ready after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def start_api(
    env: dict[str, str], log: Path, user: str, password: str, timeout: float = 300
) -> tuple[subprocess.Popen, str]:
    """One server on a database of its own: prepared, then started."""
    prepare_database(env, user, password)
    return start_server(env, log, timeout)


def fast_model() -> str:
    """The newest registered tfidf-linear version that loads and answers a product."""
    from prodclass.registry.model_registry import list_versions
    from prodclass.registry.tracking import configure_mlflow
    from prodclass.serving.model_slot import smoke_test
    from prodclass.serving.predictor import Predictor

    settings = get_settings()
    configure_mlflow(settings)
    name = settings.registered_model_name
    for row in list_versions(name):
        uri = f"models:/{name}/{row['version']}"
        try:
            predictor = Predictor.load(uri)
            if predictor.family != "tfidf-linear":
                continue
            smoke_test(predictor)
        except Exception as exc:  # noqa: BLE001 (a broken version: try an older one)
            print(f"skipping {uri}: {type(exc).__name__}: {exc}")
            continue
        return uri
    raise SystemExit(
        f"no loadable tfidf-linear version of {name} in {settings.tracking_uri}: "
        "train and register one, or pass --model"
    )


def text_products(data_dir: Path) -> list[dict[str, str]]:
    """The real products of ``data_dir`` that have a title: title and description, as posted."""
    from prodclass.data.validate import validate

    rows = validate(data_dir, check_images=False).products
    out = []
    for _, row in rows.iterrows():
        designation = row.get("designation", "") or ""
        if designation:
            out.append({"designation": designation, "description": row.get("description") or ""})
    if not out:
        raise SystemExit(f"no product with a title in {data_dir}")
    return out


def wait_drained(urls: list[str], timeout: float = 60) -> dict[str, int | None]:
    """Wait until every server's prediction log has written its backlog (as /ready reports);
    the backlog each was left with (0 when drained)."""
    backlog: dict[str, int | None] = dict.fromkeys(urls)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for url in urls:
            if backlog[url] != 0:
                answer = httpx.get(f"{url}/ready", timeout=10).json()
                backlog[url] = answer.get("prediction_log_backlog")
        if all(value == 0 for value in backlog.values()):
            break
        time.sleep(0.5)
    return backlog


def logged_prediction_ids(db_url: str) -> set[str]:
    """The ids of the predictions stored in the application database at ``db_url``."""
    from sqlalchemy import select

    from prodclass.db.session import session_scope
    from prodclass.db.tables import PredictionRecord

    with session_scope(db_url) as session:
        return set(session.scalars(select(PredictionRecord.id)))


def closed_loop_load(
    url: str, token: str, requests: list[dict[str, Any]], clients: int
) -> dict[str, Any]:
    """``clients`` clients share ``requests`` (httpx keyword arguments of a POST /predict) and
    send their part one after the other; latency percentiles (ms), answers by status, req/s."""
    latencies: list[float] = []
    codes: Counter[int] = Counter()
    per_client = len(requests) // clients

    def run(index: int) -> None:
        mine = requests[index * per_client : (index + 1) * per_client]
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
            for request in mine:
                start = time.perf_counter()
                answer = http.post("/predict", **request)
                latencies.append(time.perf_counter() - start)
                codes[answer.status_code] += 1

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(run, range(clients)))
    seconds = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000
    return {
        "requests": len(latencies),
        "ok": codes.get(200, 0),
        "errors": {code: n for code, n in codes.items() if code != 200},
        "p50": float(np.percentile(ms, 50)),
        "p95": float(np.percentile(ms, 95)),
        "p99": float(np.percentile(ms, 99)),
        "rps": codes.get(200, 0) / seconds,
    }
