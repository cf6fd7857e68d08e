"""Benchmark: the prediction API under load, next to the model's own throughput.

Usage: .venv/bin/python bench/serve_load.py [--model URI] [--data-dir DIR]
           [--requests-per-client N] [--clients 1,8,32]
    --model                the model to serve (default: PRODCLASS_MODEL_URI, the champion that
                           `make demo` registers)
    --data-dir             real products to post (default: PRODCLASS_DATA_DIR); every request
                           is a different real photo (+ its title and description when it has
                           them), so the per-photo caches start cold, as in production
    --requests-per-client  requests each client sends per level (default 10; bounded run)

Starts `prodclass serve` on a free loopback port (fresh state folder and SQLite database, the
configured MLflow store, the API settings of the environment), posts photos as multipart from
1, 8 and 32 concurrent clients and prints p50/p95/p99 latency, throughput and errors per level.
Before that it measures the model's offline throughput in this process on other photos of the
same data, with the same prediction workers and threads per worker as the server: the ratio
API / offline is the figure that matters (what the HTTP layer, queue and logging cost).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from api_server import closed_loop_load, server_env, start_api
from prodclass.data.validate import validate
from prodclass.settings import get_settings

USER, PASSWORD = "bench", "bench-password-1"


def _products(data_dir: Path) -> list[dict]:
    rows = validate(data_dir, check_images=False).products
    rows = rows[rows["image_path"] != ""]
    out = []
    for _, row in rows.sample(frac=1.0, random_state=0).iterrows():
        out.append(
            {
                "designation": row.get("designation", "") or "",
                "description": row.get("description", "") or "",
                "photo": Path(row["image_path"]).read_bytes(),
            }
        )
    return out


def _offline(model_uri: str, products: list[dict], workers: int, threads: int) -> float:
    """Products per second of the bare predictor: ``workers`` threads, one product per call."""
    from prodclass.serving.predictor import Predictor, ProductInput

    predictor = Predictor.load(model_uri)
    predictor.model.inference_threads = threads
    inputs = [ProductInput(p["designation"], p["description"], p["photo"]) for p in products]
    predictor.predict(inputs[:1])  # warm-up (this photo is not counted)
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda p: predictor.predict([p]), inputs[1:]))
    return (len(inputs) - 1) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--requests-per-client", type=int, default=10)
    parser.add_argument("--clients", default="1,8,32")
    args = parser.parse_args()
    settings = get_settings()
    model_uri = args.model or settings.model_uri
    levels = [int(c) for c in args.clients.split(",")]
    products = _products(args.data_dir or settings.data_dir)
    needed = sum(c * args.requests_per_client for c in levels)
    offline_n = min(100, max(20, len(products) - needed))
    if len(products) < needed + offline_n:
        raise SystemExit(f"{len(products)} photos; this run needs {needed + offline_n}")
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        root = Path(tmp)
        env = server_env(model_uri, root / "server-state")  # cold per-photo caches
        # the offline measurement: this process, its own cold caches, same workers x threads
        os.environ.update({k: env[k] for k in ("PRODCLASS_MLFLOW_TRACKING_URI",)})
        os.environ["PRODCLASS_STATE_DIR"] = str(root / "offline-state")
        get_settings.cache_clear()
        from prodclass.registry.tracking import configure_mlflow

        configure_mlflow(get_settings())
        workers, threads = get_settings().api_predict_workers, get_settings().api_torch_threads
        offline = _offline(model_uri, products[needed : needed + offline_n], workers, threads)
        print(f"model {model_uri}; {workers} prediction workers x {threads} torch thread(s)")
        print(f"offline (same process, no HTTP): {offline:.1f} products/s over {offline_n - 1}")
        server, url = start_api(env, root / "server.log", USER, PASSWORD)
        try:
            token = httpx.post(f"{url}/token", data={"username": USER, "password": PASSWORD})
            token = token.json()["access_token"]
            print(
                f"{'clients':>7} {'requests':>8} {'ok':>5} {'errors':>12} {'p50 ms':>8} "
                f"{'p95 ms':>8} {'p99 ms':>8} {'req/s':>7} {'vs offline':>10}"
            )
            used = 0
            for clients in levels:
                batch = products[used : used + clients * args.requests_per_client]
                used += len(batch)
                requests = [
                    {
                        "data": {"designation": p["designation"], "description": p["description"]},
                        "files": {"image": ("photo.jpg", p["photo"], "image/jpeg")},
                    }
                    for p in batch
                ]
                r = closed_loop_load(url, token, requests, clients)
                errors = ",".join(f"{c}:{n}" for c, n in r["errors"].items()) or "0"
                print(
                    f"{clients:>7} {r['requests']:>8} {r['ok']:>5} {errors:>12} "
                    f"{r['p50']:>8.0f} {r['p95']:>8.0f} {r['p99']:>8.0f} {r['rps']:>7.1f} "
                    f"{r['rps'] / offline:>9.0%}"
                )
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
