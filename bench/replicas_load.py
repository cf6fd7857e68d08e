"""Benchmark: one API replica, then two sharing one database, under the same load.

Usage: .venv/bin/python bench/replicas_load.py [--concurrency 16] [--duration 30]
           [--model URI] [--data-dir DIR] [--database-url URL]
    --concurrency   clients posting at once, closed loop (each sends its next request when
                    its last is answered)
    --duration      seconds of load on each setup
    --model         the model to serve (default: the newest registered `tfidf-linear` version
                    that loads, the fast text model)
    --data-dir      real products whose titles and descriptions are posted, text only
                    (default: PRODCLASS_DATA_DIR)
    --database-url  the application database the replicas share (default: a SQLite file in a
                    temporary folder; an empty PostgreSQL database for the deployed setup)

Starts replica A (`prodclass serve` on a free loopback port, a state folder of its own) and
drives the load at it alone; then starts replica B on the same database with the same signing
key (a token from either is good on both) and drives the same load round robin over A and B.
For each setup it prints requests answered, errors, throughput and p50/p95 latency, and, once
both prediction logs have written their backlog, whether the database holds exactly the ids
of the predictions answered so far; then the ratios two / one. Both replicas share this
machine's cores: a second process gains what one leaves idle (the interpreter lock, waits on
the database and the network), not a second machine.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from api_server import (
    fast_model,
    logged_prediction_ids,
    prepare_database,
    server_env,
    start_server,
    text_products,
    wait_drained,
)
from prodclass.settings import get_settings

USER, PASSWORD = "replicas", "replicas-password-1"
WARM_UP_SECONDS = 3.0  # a new replica's first answers (lazy imports, pools) are not measured


@dataclass
class Load:
    """What one setup answered: latencies of the 200s, every status, the prediction ids."""

    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)
    ids: set[str] = field(default_factory=set)

    @property
    def answered(self) -> int:
        return self.codes.get("200", 0)

    @property
    def errors(self) -> dict[str, int]:
        return {code: n for code, n in self.codes.items() if code != "200"}

    @property
    def throughput(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.latencies) * 1000, q)) if self.latencies else 0.0


def drive(
    urls: list[str], token: str, products: list[dict[str, str]], concurrency: int, seconds: float
) -> Load:
    """``concurrency`` clients posting /predict for ``seconds``, request n to urls[n % len]."""
    load, lock, turn = Load(), threading.Lock(), itertools.count()
    headers = {"Authorization": f"Bearer {token}"}
    stop = time.perf_counter() + seconds

    def client(_: int) -> None:
        http = {url: httpx.Client(base_url=url, headers=headers, timeout=60) for url in urls}
        try:
            while time.perf_counter() < stop:
                with lock:
                    n = next(turn)
                start = time.perf_counter()
                try:
                    answer = http[urls[n % len(urls)]].post(
                        "/predict", data=products[n % len(products)]
                    )
                    code = str(answer.status_code)
                except httpx.HTTPError as exc:
                    code = type(exc).__name__
                took = time.perf_counter() - start
                with lock:
                    load.codes[code] += 1
                    if code == "200":
                        load.latencies.append(took)
                        load.ids.add(answer.json()["prediction_id"])
        finally:
            for one in http.values():
                one.close()

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(client, range(concurrency)))
    load.seconds = time.perf_counter() - start
    return load


def logged_verdict(urls: list[str], db_url: str, answered: set[str]) -> str:
    """Once the replicas' logs are written: does the database hold exactly ``answered``?"""
    backlog = wait_drained(urls)
    stored = logged_prediction_ids(db_url)
    if stored == answered:
        return f"{len(stored)} rows = {len(answered)} answered ids"
    return (
        f"MISMATCH: {len(stored)} rows, {len(answered)} answered ids, "
        f"{len(answered - stored)} missing, {len(stored - answered)} unknown (backlog {backlog})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--model", default=None)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    products = text_products(args.data_dir or get_settings().data_dir)
    model_uri = args.model or fast_model()
    servers: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="replicas-load-") as tmp:
        root = Path(tmp)
        db_url = args.database_url or f"sqlite:///{root / 'shared.db'}"
        shared = server_env(model_uri, root / "a", PRODCLASS_DATABASE_URL=db_url)
        prepare_database(shared, USER, PASSWORD)
        print(
            f"model {model_uri}; {args.concurrency} clients for {args.duration:g} s per setup; "
            f"database {db_url.split(':', 1)[0]} shared; {os.cpu_count()} cores, "
            f"load average {os.getloadavg()[0]:.1f} at start"
        )
        print(
            f"{'replicas':>8} {'answered':>8} {'errors':>12} {'req/s':>7} {'p50 ms':>7} "
            f"{'p95 ms':>7}  prediction log"
        )
        try:
            urls: list[str] = []
            answered: set[str] = set()
            results: list[Load] = []
            for name in ("a", "b"):
                env = shared | {"PRODCLASS_STATE_DIR": str(root / name)}  # own caches and files
                server, url = start_server(env, root / f"{name}.log")
                servers.append(server)
                urls.append(url)
                credentials = {"username": USER, "password": PASSWORD}
                signed_in = httpx.post(f"{url}/token", data=credentials).raise_for_status()
                token = signed_in.json()["access_token"]  # good on both: one signing key
                answered |= drive([url], token, products, 2, WARM_UP_SECONDS).ids
                load = drive(urls, token, products, args.concurrency, args.duration)
                answered |= load.ids
                results.append(load)
                errors = ",".join(f"{c}:{n}" for c, n in load.errors.items()) or "0"
                print(
                    f"{len(urls):>8} {load.answered:>8} {errors:>12} {load.throughput:>7.1f} "
                    f"{load.percentile_ms(50):>7.0f} {load.percentile_ms(95):>7.0f}  "
                    f"{logged_verdict(urls, db_url, answered)}",
                    flush=True,
                )
            one, two = results
            if one.throughput and one.latencies:
                print(
                    f"two / one: throughput x{two.throughput / one.throughput:.2f}, "
                    f"p50 x{two.percentile_ms(50) / one.percentile_ms(50):.2f}, "
                    f"p95 x{two.percentile_ms(95) / one.percentile_ms(95):.2f}"
                )
        finally:
            for server in servers:
                server.terminate()
            for server in servers:
                server.wait(30)


if __name__ == "__main__":
    main()
