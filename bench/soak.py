"""Soak test: the prediction API at a steady request rate for minutes, watching for leaks.

Usage: .venv/bin/python bench/soak.py [--rate 40] [--minutes 4.5] [--model URI]
           [--data-dir DIR] [--warmup 1000] [--url URL --username U --password P [--pid PID]]
    --rate      requests per second, open loop: each request leaves at its scheduled time
                whether or not earlier ones were answered (latency counts from that time, so a
                slow server cannot hide its queueing by slowing the client down)
    --minutes   how long to hold the rate; the defaults (40 req/s, 4.5 min) send 10,800
                predictions, enough to see memory growth per 1,000 predictions
    --model     the model to serve (default: the newest registered `tfidf-linear` version
                that loads, the fast text model; `--model models:/prodclass@champion` soaks
                the champion)
    --data-dir  real products whose titles and descriptions are posted, text only
                (default: PRODCLASS_DATA_DIR)
    --warmup    predictions before the "after warm-up" memory sample (caches, pools, lazy
                imports fill up first; growth is measured after it)
    --url       soak a running API instead (with an account's --username/--password); its
                memory is sampled only with --pid (the server's process id, same machine)

By default it starts `prodclass serve` on a free loopback port (fresh state folder and SQLite
database, the configured MLflow store) and prints: requests sent/answered/errors, p50/p95/p99
latency, the achieved rate, the server's resident memory (RSS) at start, after warm-up and at
the end with the growth per 1,000 predictions, and, once the prediction log has caught up,
whether every answered prediction is in the database.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from api_server import (
    fast_model,
    logged_prediction_ids,
    server_env,
    start_api,
    text_products,
    wait_drained,
)
from prodclass.settings import get_settings

USER, PASSWORD = "soak", "soak-password-1"


def _rss_mb(pid: int | None) -> float | None:
    """Resident memory of a process (Linux /proc), MB."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _start_server(model_uri: str, root: Path) -> tuple[subprocess.Popen, str, str]:
    env = server_env(model_uri, root / "server-state")
    process, url = start_api(env, root / "server.log", USER, PASSWORD)
    return process, url, env["PRODCLASS_DATABASE_URL"]


class Soak:
    """Open-loop load: a scheduler hands each request, stamped with its due time, to a pool of
    sender threads (each with its own keep-alive connection)."""

    def __init__(self, url: str, token: str, products: list[dict[str, str]], senders: int):
        self.url, self.products = url, products
        self.headers = {"Authorization": f"Bearer {token}"}
        self.pool = ThreadPoolExecutor(senders, thread_name_prefix="soak")
        self.local = threading.local()
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.codes: Counter[str] = Counter()
        self.sent = 0

    @property
    def answered(self) -> int:
        return self.codes.get("200", 0)

    def _send(self, index: int, due: float) -> None:
        http = getattr(self.local, "http", None)
        if http is None:
            http = self.local.http = httpx.Client(
                base_url=self.url, headers=self.headers, timeout=60
            )
        try:
            answer = http.post("/predict", data=self.products[index % len(self.products)])
            code = str(answer.status_code)
        except httpx.HTTPError as exc:
            code = type(exc).__name__
        with self.lock:
            self.codes[code] += 1
            if code == "200":
                self.latencies.append(time.perf_counter() - due)

    def run(self, rate: float, seconds: float, on_tick) -> float:
        """Schedule ``rate`` requests a second for ``seconds``; wait for the answers; call
        ``on_tick(elapsed)`` about once a second. Returns the seconds until the last answer."""
        start = time.perf_counter()
        total = int(rate * seconds)
        futures = []
        next_tick = start + 1
        for i in range(total):
            due = start + i / rate
            while (now := time.perf_counter()) < due:
                time.sleep(min(due - now, 0.01))
            futures.append(self.pool.submit(self._send, i, due))
            self.sent += 1
            if now >= next_tick:
                on_tick(now - start)
                next_tick += 1
        for future in futures:
            future.result()
        self.pool.shutdown()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--minutes", type=float, default=4.5)
    parser.add_argument("--model", default=None)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--senders", type=int, default=32, help="sender threads (open loop)")
    parser.add_argument("--url", default=None)
    parser.add_argument("--username", default=None)
    parser.add_argument("--password", default=None)
    parser.add_argument("--pid", type=int, default=None)
    args = parser.parse_args()
    settings = get_settings()
    products = text_products(args.data_dir or settings.data_dir)
    server = None
    db_url = None
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        if args.url:
            url, pid = args.url.rstrip("/"), args.pid
            user, password = args.username, args.password
            print(f"soaking {url}")
        else:
            model_uri = args.model or fast_model()
            server, url, db_url = _start_server(model_uri, Path(tmp))
            pid, user, password = server.pid, USER, PASSWORD
            print(f"soaking prodclass serve (pid {pid}) on {url} with model {model_uri}")
        try:
            answer = httpx.post(f"{url}/token", data={"username": user, "password": password})
            answer.raise_for_status()
            soak = Soak(url, answer.json()["access_token"], products, args.senders)
            rss = {"start": _rss_mb(pid)}
            answered_at_warmup = 0
            last_print = 0.0

            def tick(elapsed: float) -> None:
                nonlocal answered_at_warmup, last_print
                if "warm" not in rss and soak.answered >= args.warmup:
                    rss["warm"], answered_at_warmup = _rss_mb(pid), soak.answered
                if elapsed - last_print >= 30:
                    last_print = elapsed
                    mem = _rss_mb(pid)
                    print(
                        f"  {elapsed:5.0f} s: sent {soak.sent}, answered {soak.answered}, "
                        f"other {sum(soak.codes.values()) - soak.answered}"
                        + (f", RSS {mem:.1f} MB" if mem else ""),
                        flush=True,
                    )

            seconds = soak.run(args.rate, args.minutes * 60, tick)
            rss["end"] = _rss_mb(pid)
            report(soak, seconds, rss, answered_at_warmup, args)
            if db_url:
                check_log(url, db_url, soak.answered)
        finally:
            if server is not None:
                server.terminate()
                server.wait(30)


def report(soak: Soak, seconds: float, rss: dict, answered_at_warmup: int, args) -> None:
    ms = np.asarray(soak.latencies) * 1000 if soak.latencies else np.zeros(1)
    errors = {code: n for code, n in soak.codes.items() if code != "200"}
    print(f"target rate      {args.rate:.1f} req/s for {args.minutes:g} min")
    print(f"requests         sent {soak.sent}, answered 200 {soak.answered}, errors {errors or 0}")
    print(f"achieved rate    {soak.answered / seconds:.1f} answered/s over {seconds:.0f} s")
    print(
        f"latency (ms)     p50 {np.percentile(ms, 50):.1f}, p95 {np.percentile(ms, 95):.1f}, "
        f"p99 {np.percentile(ms, 99):.1f}, max {ms.max():.1f} (from each request's due time)"
    )
    if rss.get("start") is None:
        print("server RSS       not sampled (pass --pid for a server started elsewhere)")
        return
    print(
        f"server RSS (MB)  start {rss['start']:.1f}, after {answered_at_warmup} predictions "
        f"{rss.get('warm') or float('nan'):.1f}, end {rss['end']:.1f}"
    )
    after = soak.answered - answered_at_warmup
    if rss.get("warm") is not None and after > 0:
        growth = (rss["end"] - rss["warm"]) / (after / 1000)
        print(f"RSS growth       {growth * 1024:.1f} KB per 1,000 predictions after warm-up")


def check_log(url: str, db_url: str, answered: int) -> None:
    """Wait for the prediction log to catch up; every answered prediction must be a row."""
    backlog = wait_drained([url])[url]
    rows = len(logged_prediction_ids(db_url))
    verdict = "all logged" if rows == answered else f"MISMATCH (backlog {backlog})"
    print(f"prediction log   {rows} rows for {answered} answered: {verdict}")


if __name__ == "__main__":
    main()
