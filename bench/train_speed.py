"""Benchmark: what training a model family costs on this CPU: the per-photo inputs (image
network activations, words read on the photo) with a cold and with a warm cache, then the
seconds per training epoch.

Usage: .venv/bin/python bench/train_speed.py [--family NAME] [--params JSON] [--epochs N]
                                             [--n-train N]
                                             [--data-dir DIR] [--save DIR]
    --family    default multimodal-effnet (its params.yaml section, if any, applies)
    --params    JSON overrides of the family's params, e.g. '{"ocr": "photo_only"}'
    --epochs    epochs of the timed fit (default 3; early stopping may end it sooner)
    --n-train   first N rows of the shuffled train split (default: all of it)
    --data-dir  default: PRODCLASS_DATA_DIR (settings)
    --save      keep the fitted model in this folder (e.g. for bench/predict_speed.py --model)
Runs in a temporary state folder, so every cache starts cold and nothing is left behind. The
cold/warm timings call the same cached functions the family's fit calls, with the same keys, so
the fit that follows finds them warm and its epochs are timed alone. One line per number.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from prodclass.data.prepare import SplitParams, load_prepared, prepare
from prodclass.data.validate import validate
from prodclass.models.registry import create
from prodclass.params import load_params
from prodclass.settings import get_settings


class EpochClock(logging.Handler):
    """Times of the "epoch N: …" log records, for a history that has no per-epoch seconds."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("epoch "):
            self.times.append(record.created)


def epoch_seconds(history: list[dict[str, Any]], clock: EpochClock) -> tuple[int, list[float], str]:
    """First epoch timed, seconds of each timed epoch, and where they come from: the history
    when it has them, else the time between epoch log lines (the first epoch has no start)."""
    for key in ("seconds", "epoch_seconds"):
        if history and all(key in h for h in history):
            return 1, [float(h[key]) for h in history], f"history[{key!r}]"
    return 2, list(np.diff(clock.times)), "time between epoch log lines"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="multimodal-effnet")
    parser.add_argument("--params", type=json.loads, default={})
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--save", type=Path, default=None)
    args = parser.parse_args()
    data_dir = args.data_dir or get_settings().data_dir
    with tempfile.TemporaryDirectory(prefix="prodclass-train-speed-") as tmp:
        # settings are read lazily: from here on the family's caches and checkpoints go to tmp
        os.environ["PRODCLASS_STATE_DIR"] = str(Path(tmp) / "state")
        get_settings.cache_clear()
        run(args, data_dir, Path(tmp))


def cold_and_warm(label: str, compute: Callable[[], object], n_photos: int) -> None:
    """Run ``compute`` twice (cold cache, then warm) and print both times and the speed-up."""
    took = {}
    for state in ("cold", "warm"):
        start = time.perf_counter()
        compute()
        took[state] = time.perf_counter() - start
        print(
            f"{label}, {state} cache: {took[state]:8.2f} s {n_photos / took[state]:8,.1f} photos/s"
        )
    print(f"{label}, speed-up from the cache: {took['cold'] / took['warm']:8.1f} x")


def run(args: argparse.Namespace, data_dir: Path, tmp: Path) -> None:
    settings = get_settings()
    params = load_params(settings.params_file).family_params(args.family) | args.params
    model = create(args.family, params)
    if "epochs" in type(model.params).model_fields:
        model = create(args.family, params | {"epochs": args.epochs})
    validated = validate(data_dir, workers=settings.image_check_workers)
    prepare(validated, tmp / "prepared", SplitParams())
    train = load_prepared(tmp / "prepared", "train").sample(frac=1.0, random_state=0)
    train = train.head(args.n_train) if args.n_train else train
    val = load_prepared(tmp / "prepared", "val")
    photos = [p for p in train["image_path"] if p]
    print(f"{args.family}: {len(train)} train products ({len(photos)} photos), {len(val)} val")

    val_photos = [p for p in val["image_path"] if p]
    if getattr(model, "effnet_config", None) is not None and model.params.use_image:
        import torch

        from prodclass.models.feature_cache import FeatureCache, trunk_activations
        from prodclass.models.image_effnet import EffNetTrunk, load_pretrained_effnet

        torch.set_num_threads(model.params.threads)
        trunk = EffNetTrunk(load_pretrained_effnet(model.params.variant), model.effnet_config)
        cache = FeatureCache(settings.state_dir / "feature-cache")  # where the family looks
        views = tuple(model.params.views)
        cold_and_warm(
            f"image features ({len(views)} views, {torch.get_num_threads()} threads)",
            lambda: trunk_activations(
                photos, trunk, cache, model.effnet_config, views, progress=False
            ),
            len(photos),
        )
        # validation photos (one view) warmed untimed, so the fit below times its epochs
        trunk_activations(val_photos, trunk, cache, model.effnet_config, progress=False)
        model.cache = cache

    encoder = getattr(model, "encoder", None)  # late-fusion: frozen pooled photo features
    if encoder is not None:
        import torch

        from prodclass.models.feature_cache import FeatureCache

        torch.set_num_threads(model.params.threads)
        cache = FeatureCache(settings.state_dir / "feature-cache")  # where the family looks
        views = ("orig", "hflip") if model.params.tta else ("orig",)
        cold_and_warm(
            f"frozen photo features ({len(views)} views, {torch.get_num_threads()} threads)",
            lambda: encoder.features(photos, views, cache),
            len(photos),
        )
        model.cache = cache

    if getattr(model.params, "ocr", False) not in (False, "off") and getattr(
        model.params, "use_text", True
    ):
        from prodclass.data.ocr import read_photos

        ocr_dir, workers = settings.state_dir / "ocr-cache", settings.ocr_workers
        cold_and_warm(
            f"OCR words ({workers} workers)",
            lambda: read_photos(photos, ocr_dir, workers=workers),
            len(photos),
        )
        read_photos(val_photos, ocr_dir, workers=workers)

    clock = EpochClock()
    logging.getLogger("prodclass").addHandler(clock)
    logging.getLogger("prodclass").setLevel(logging.INFO)
    start = time.perf_counter()
    facts = model.fit(train, val)
    fit_seconds = time.perf_counter() - start
    print(f"fit with warm caches: {fit_seconds:8.2f} s")
    if args.save is not None:
        print(f"model saved to {model.save(args.save)}")
    first, seconds, source = epoch_seconds(facts.get("history", []), clock)
    if not seconds:
        print("seconds per epoch: not measurable (no history, or fewer than 2 epochs)")
        return
    for epoch, took in enumerate(seconds, start=first):
        print(f"epoch {epoch}: {took:8.2f} s {len(train) / took:8,.1f} train products/s")
    print(f"seconds per epoch (mean of {len(seconds)}, {source}): {np.mean(seconds):8.2f} s")
    if first == 1:
        print(
            f"fit outside the epochs (inputs, stacking, calibration): "
            f"{fit_seconds - sum(seconds):8.2f} s"
        )


if __name__ == "__main__":
    main()
