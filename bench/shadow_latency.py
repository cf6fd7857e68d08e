"""Benchmark: what shadow mode costs the answers — /predict latency with the challenger off and
shadowing every request.

Usage: .venv/bin/python bench/shadow_latency.py [--challenger VERSION] [--requests N]
           [--clients C] [--data-dir DIR]
    --challenger  the registered version that shadows (default: the `challenger` alias of
                  PRODCLASS_REGISTERED_MODEL_NAME); the champion is PRODCLASS_MODEL_URI
    --requests    requests per phase (default 300), the same real titles in both phases
    --clients     concurrent clients (default 4)
    --data-dir    real products to post (default: PRODCLASS_DATA_DIR), those with a title

Starts `prodclass serve` on a free loopback port (fresh state folder and SQLite database, the
configured MLflow store), sends the load with no A/B test, then starts a shadow test through
PUT /models/ab (which returns once the challenger is loaded) and sends the same load again.
Prints p50/p95/p99 per phase (warm-up requests not counted, but shadowed), the shadow
answers dropped (queue full) and those logged. On a small CPU the challenger's calls compete
with the champion's for the cores even though no answer waits for them.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from api_server import (
    PRODCLASS,
    closed_loop_load,
    prepare_database,
    server_env,
    start_server,
    text_products,
    wait_drained,
)
from prodclass.settings import get_settings

USER, PASSWORD = "bench", "bench-password-1"
ADMIN, ADMIN_PASSWORD = "bench-admin", "bench-admin-password-1"


def _token(url: str, user: str, password: str) -> str:
    answer = httpx.post(f"{url}/token", data={"username": user, "password": password})
    answer.raise_for_status()
    return answer.json()["access_token"]


def _metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--challenger", default="challenger")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    settings = get_settings()
    products = text_products(args.data_dir or settings.data_dir)
    products = (products * (args.requests // len(products) + 1))[: args.requests]
    requests = [{"data": product} for product in products]  # form fields of POST /predict
    warm_up = requests[: args.clients * 5]
    with tempfile.TemporaryDirectory(prefix="shadow-latency-") as tmp:
        root = Path(tmp)
        env = server_env(settings.model_uri, root / "state")
        prepare_database(env, USER, PASSWORD)
        subprocess.run(
            [PRODCLASS, "users", "create", ADMIN, "--role", "admin", "--password-stdin"],
            env=env, input=ADMIN_PASSWORD + "\n", text=True, check=True, capture_output=True,
        )  # fmt: skip
        server, url = start_server(env, root / "server.log")
        try:
            token = _token(url, USER, PASSWORD)
            admin = {"Authorization": f"Bearer {_token(url, ADMIN, ADMIN_PASSWORD)}"}
            champion = httpx.get(f"{url}/models/current", headers=admin).json()["serving"]
            print(
                f"champion {champion['name']} v{champion['version']} ({champion['family']}); "
                f"{args.requests} requests per phase from {args.clients} clients"
            )
            print(
                f"{'shadow':<7} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p95 ms':>8} "
                f"{'p99 ms':>8} {'req/s':>7}"
            )
            for phase in ("off", "on"):
                if phase == "on":
                    started = httpx.put(
                        f"{url}/models/ab",
                        json={"challenger": args.challenger, "mode": "shadow"},
                        headers=admin,
                        timeout=600,
                    )
                    if started.status_code != 200:
                        raise SystemExit(f"cannot start the shadow test: {started.text}")
                    test = started.json()["test"]
                closed_loop_load(url, token, warm_up, args.clients)  # not counted
                r = closed_loop_load(url, token, requests, args.clients)
                errors = sum(r["errors"].values())
                print(
                    f"{phase:<7} {r['requests']:>8} {errors:>6} {r['p50']:>8.1f} "
                    f"{r['p95']:>8.1f} {r['p99']:>8.1f} {r['rps']:>7.1f}"
                )
            dropped = _metric(url, "prodclass_ab_shadow_dropped_total")
            deadline = time.monotonic() + 120  # the challenger finishes what it queued
            while _metric(url, "prodclass_ab_shadow_queue_depth") and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(2)  # the last one predicted reaches the log
            wait_drained([url])
            report = httpx.get(f"{url}/models/ab", headers=admin).json()
            shadow = next((a for a in report["arms"] if a["arm"] == "shadow"), None)
            print(
                f"challenger v{test['challenger_version']}: {int(dropped)} shadow predictions "
                f"dropped (queue full), {shadow['predictions'] if shadow else 0} logged; "
                f"shadow model call p50 {shadow['latency_ms_p50'] if shadow else 0:.1f} ms"
            )
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
