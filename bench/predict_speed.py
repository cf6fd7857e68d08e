"""Benchmark: how fast a trained model answers one request of 1 or of 32 products, by modality.

Usage: .venv/bin/python bench/predict_speed.py --model MODEL [--data-dir DIR] [--max-seconds S]
    --model        a model folder, runs:/…/model, or models:/prodclass@champion. To get one:
                   .venv/bin/prodclass train --data ../shared/data/rakuten_sample \\
                       --out models/candidate [--model-family multimodal-effnet]
    --data-dir     labelled products to send (default: PRODCLASS_DATA_DIR), validated
                   without decoding photos
    --max-seconds  time budget per batch size and row group (default 5; torch models stop
                   early, after at least 3 calls)
    --threads      intra-op CPU threads per prediction (default PRODCLASS_API_TORCH_THREADS,
                   what the API gives each prediction worker; on a busy 2-core machine two
                   threads made a new photo 14x slower than one)
Prints p50/p95 milliseconds per predict_proba call and products/second, for all products as
they come, then text only, image only and both. The measurement is training/latency.py's, the
same as the `latency` of evaluation reports: real rows, a warm-up call, empty per-photo caches.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from prodclass.data.validate import validate
from prodclass.registry.model_registry import load_classifier
from prodclass.registry.tracking import configure_mlflow
from prodclass.settings import get_settings
from prodclass.training.latency import latency_by_modality


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder or MLflow model URI")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--max-seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    settings = get_settings()
    if not Path(args.model).is_dir():  # a registry or run URI: needs the tracking store
        configure_mlflow(settings)
    data_dir = args.data_dir or settings.data_dir
    start = time.perf_counter()
    model = load_classifier(args.model)
    model.inference_threads = args.threads or settings.api_torch_threads  # as the API does
    print(f"model {args.model} ({model.family}) loaded in {time.perf_counter() - start:.2f} s")
    products = validate(data_dir, check_images=False).products
    print(f"{len(products)} labelled products from {data_dir}")
    print(f"{'rows':<11} {'batch':>5} {'p50 ms':>9} {'p95 ms':>9} {'products/s':>11} {'calls':>6}")
    by_group = latency_by_modality(model, products, max_seconds=args.max_seconds)
    for name, latency in by_group.items():
        for batch, n in latency.items():
            size = batch.removeprefix("batch_")
            print(
                f"{name:<11} {size:>5} {n['p50_ms']:>9.1f} {n['p95_ms']:>9.1f} "
                f"{n['products_per_second']:>11,.1f} {n['calls']:>6}"
            )


if __name__ == "__main__":
    main()
