"""Inference latency of a loaded classifier on this machine: one request of 1 or 32 products.

Why in the evaluation report: a challenger that is one point of F1 better but ten times slower
is a serving decision, not only a metric one, and the number has to come from the same model
and the same rows as the scores.

How it is measured: ``predict_proba`` on frames holding only what serving receives
(``text``, ``title`` and ``image_path``), built from real rows of the evaluated frame in a
seeded random order (so products with and without photos come in their natural mix). One
untimed warm-up call per batch size first (lazy loads, allocator), then up to ``repeats``
timed calls, each on rows not used before when the frame is large enough, stopped early once
``max_seconds`` are spent.
Families that cache per-photo work by content (image-network activations, words read on the
photo) get empty temporary caches for the measurement: a serving model sees new photos, so a
cache already holding the evaluated photos would time a disk read instead of the real work.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prodclass.models.base import ProductClassifier

log = logging.getLogger(__name__)

SERVING_COLUMNS = ["text", "title", "image_path"]
# batch size -> timed calls; the larger batch needs fewer calls for a stable median
DEFAULT_REPEATS: Mapping[int, int] = {1: 50, 32: 10}
MIN_CALLS = 3  # even when the time budget is spent: a p95 of fewer calls means little


def _percentile_ms(seconds: list[float], q: float) -> float:
    return round(float(np.percentile(seconds, q)) * 1000, 3)


@contextlib.contextmanager
def _cold_caches(model: ProductClassifier) -> Iterator[None]:
    """Point a family's per-photo caches at empty temporary folders (see module docstring).

    The caches a family exposes: ``cache`` (a ``FeatureCache`` of image-network activations)
    and ``ocr_cache_dir`` (where words read on photos are kept); None means the default one
    under the state folder, which may already hold the evaluated photos.
    """
    swapped = [name for name in ("cache", "ocr_cache_dir") if hasattr(model, name)]
    if not swapped:
        yield
        return
    previous = {name: getattr(model, name) for name in swapped}
    with tempfile.TemporaryDirectory(prefix="prodclass-latency-") as tmp:
        if "cache" in swapped:
            from prodclass.models.feature_cache import FeatureCache  # needs torch: only here

            model.cache = FeatureCache(Path(tmp) / "features")
        if "ocr_cache_dir" in swapped:
            model.ocr_cache_dir = Path(tmp) / "ocr"
        try:
            yield
        finally:
            for name, value in previous.items():
                setattr(model, name, value)


def _batches(products: pd.DataFrame, batch_size: int, n: int, seed: int) -> list[pd.DataFrame]:
    """``n`` serving-shaped frames of ``batch_size`` real rows, distinct while rows last."""
    frame = products.reindex(columns=SERVING_COLUMNS, fill_value="").reset_index(drop=True)
    order = np.random.default_rng(seed).permutation(len(frame))
    needed = batch_size * n
    positions = np.resize(order, needed)  # wraps around only when the frame is too small
    return [
        frame.iloc[positions[i : i + batch_size]].reset_index(drop=True)
        for i in range(0, needed, batch_size)
    ]


def measure_latency(
    model: ProductClassifier,
    products: pd.DataFrame,
    repeats: Mapping[int, int] = DEFAULT_REPEATS,
    max_seconds: float = 5.0,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Per batch size: p50/p95 milliseconds of one ``predict_proba`` call and products/second.

    Returns ``{"batch_1": {"p50_ms", "p95_ms", "products_per_second", "calls"}, "batch_32":
    {...}}``; ``max_seconds`` bounds the timed calls of each batch size (after ``MIN_CALLS``).
    """
    if products.empty:
        raise ValueError("latency needs at least one product")
    result: dict[str, dict[str, Any]] = {}
    for batch_size, n_calls in repeats.items():
        if batch_size < 1 or n_calls < 1:
            raise ValueError(f"batch size and repeats must be positive: {batch_size}, {n_calls}")
        warmup, *timed = _batches(products, batch_size, n_calls + 1, seed + batch_size)
        seconds: list[float] = []
        with _cold_caches(model):
            model.predict_proba(warmup)
            spent = time.perf_counter()
            for batch in timed:
                start = time.perf_counter()
                model.predict_proba(batch)
                seconds.append(time.perf_counter() - start)
                if len(seconds) >= MIN_CALLS and time.perf_counter() - spent > max_seconds:
                    break
        result[f"batch_{batch_size}"] = {
            "p50_ms": _percentile_ms(seconds, 50),
            "p95_ms": _percentile_ms(seconds, 95),
            "products_per_second": round(batch_size * len(seconds) / sum(seconds), 1),
            "calls": len(seconds),
        }
        log.debug("latency batch %d: %s", batch_size, result[f"batch_{batch_size}"])
    return result


def latency_metrics(latency: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Flat MLflow metric names: ``latency_batch_1_p50_ms``, ``latency_batch_32_p95_ms``, …"""
    return {
        f"latency_{batch}_{key}": float(value)
        for batch, numbers in latency.items()
        for key, value in numbers.items()
        if key != "calls"
    }


def latency_by_modality(
    model: ProductClassifier,
    products: pd.DataFrame,
    repeats: Mapping[int, int] = DEFAULT_REPEATS,
    max_seconds: float = 5.0,
) -> dict[str, dict[str, dict[str, Any]]]:
    """``measure_latency`` for all products as they come, then per ``modality`` group
    (text_only, image_only, both); groups without products are left out."""
    groups = {"all": products} | {
        m: products[products["modality"] == m] for m in ("text_only", "image_only", "both")
    }
    return {
        name: measure_latency(model, rows, repeats, max_seconds)
        for name, rows in groups.items()
        if not rows.empty
    }
