"""Benchmark: EfficientNet-Lite trunk activations without / with the feature cache, and the
cost of one training step of the tail on cached activations.

Usage: .venv/bin/python bench/feature_cache_speed.py [N_PHOTOS] [--threads T] [--data-dir DIR]
    N_PHOTOS   first N photos of DIR/images/image_train (default 128)
    --threads  torch CPU threads (default: $PRODCLASS_TORCH_THREADS, else torch's default)
    --data-dir default: PRODCLASS_DATA_DIR (settings)
Prints photos/second, so the cost of an epoch on the full 84,916-product set can be projected.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from prodclass.data.layout import IMAGE_DIRS
from prodclass.models.feature_cache import FeatureCache, trunk_activations
from prodclass.models.image_effnet import EffNetConfig, build_effnet
from prodclass.settings import get_settings

BATCH = 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n_photos", nargs="?", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    threads = args.threads or int(os.environ.get("PRODCLASS_TORCH_THREADS", 0)) or None
    if threads:
        torch.set_num_threads(threads)
    data_dir = args.data_dir or get_settings().data_dir
    paths = sorted(str(p) for p in (data_dir / IMAGE_DIRS["train"]).glob("*.jpg"))
    paths = paths[: args.n_photos]
    config = EffNetConfig()
    trunk, tail = build_effnet(config)
    n = len(paths)
    print(
        f"{n} photos from {data_dir}, {config}, batch {BATCH}, "
        f"{torch.get_num_threads()} torch threads"
    )

    def timed(label: str, cache: FeatureCache | None) -> np.ndarray:
        start = time.perf_counter()
        acts = trunk_activations(paths, trunk, cache, config, batch_size=BATCH, progress=False)
        elapsed = time.perf_counter() - start
        print(f"  {label:<34} {elapsed:6.2f} s  {n / elapsed:8,.0f} photos/s")
        return acts

    print("trunk activations (view 'orig'):")
    timed("no cache (read, decode, trunk)", None)
    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(tmp)
        timed("cold cache (+ hash, write)", cache)
        acts = timed("warm cache (read, hash, load)", cache)
        size = sum(p.stat().st_size for p in Path(tmp).rglob("*.npy"))
        print(
            f"  cache: {cache.hits} hits, {cache.misses} misses, "
            f"{size / max(n, 1) / 1024:.1f} KiB per photo and view"
        )

    # one training step of the tail (+ a linear 27-way head) per batch of cached activations
    head = torch.nn.Linear(tail.out_dim, 27)
    optimizer = torch.optim.AdamW([*tail.parameters(), *head.parameters()], lr=1e-4)
    tail.train()
    labels = torch.randint(0, 27, (n,), generator=torch.Generator().manual_seed(0))
    batches = [range(s, min(s + BATCH, n)) for s in range(0, n, BATCH)]
    steps = [b for b in batches if len(b) == BATCH] or batches
    times = []
    for rows in [steps[0], *steps]:  # the first step warms up and is not counted
        x = torch.from_numpy(acts[rows.start : rows.stop, 0])  # (32, C, 7, 7) float16
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(head(tail(x)), labels[rows.start : rows.stop])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    per_batch = float(np.mean(times[1:]))
    print(
        f"tail ({config.trainable_blocks} blocks + head) forward+backward+step, "
        f"{len(steps)} batches of {len(steps[0])}:"
    )
    print(f"  {per_batch * 1000:6.1f} ms/batch  {len(steps[0]) / per_batch:8,.0f} photos/s")


if __name__ == "__main__":
    main()
