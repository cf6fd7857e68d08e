"""Benchmark: the on-disk caches stay under their caps while a replica sees new photos.

Usage: .venv/bin/python bench/cache_bound.py [--feature-mb MB] [--ocr-mb MB] [--photos N]
                                             [--train N] [--batch B] [--again K]
                                             [--data-dir DIR]
    --feature-mb  cap of the feature cache while serving (default 5)
    --ocr-mb      cap of the OCR cache while serving (default 1)
    --photos      new products with a photo sent through the predictor (default 600, several
                  times what the caps hold)
    --train       products the late-fusion model is trained on first (default 200)
    --batch       products per predict call (default 50)
    --again       products of the second pass: the K sent last, then the K sent first
                  (default 100)
    --data-dir    default: PRODCLASS_DATA_DIR (settings)
Trains `late-fusion` (params.yaml's section, with Tesseract reading every photo so both caches
are used) on the first products, in a state folder of its own without caps; then serves the
other products' raw fields and photo bytes through `serving.predictor.Predictor`, as the API
does, with a fresh state folder under the caps. Prints both caches' size against their caps
after each call, then the hit rates of a second pass over the most recent and the oldest
products: the first are still cached, the second were evicted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from prodclass.cache_budget import MIB, counts, folder_bytes
from prodclass.data.layout import ChallengeLayout, read_features
from prodclass.data.prepare import SplitParams, load_prepared, prepare
from prodclass.data.validate import validate
from prodclass.models.registry import create
from prodclass.params import load_params
from prodclass.serving.predictor import Predictor, ProductInput, product_inputs
from prodclass.settings import get_settings

FAMILY = "late-fusion"


def use_state(state: Path, feature_mb: int, ocr_mb: int) -> None:
    """Point the settings (read lazily by the caches) at ``state`` under these caps."""
    os.environ["PRODCLASS_STATE_DIR"] = str(state)
    os.environ["PRODCLASS_FEATURE_CACHE_MAX_MB"] = str(feature_mb)
    os.environ["PRODCLASS_OCR_CACHE_MAX_MB"] = str(ocr_mb)
    get_settings.cache_clear()


def new_products(data_dir: Path, trained_on: set[str], n: int) -> list[ProductInput]:
    """Up to ``n`` products whose photo (by file name) the model was not trained on, training
    rows first, then the unlabelled test rows, as raw fields and photo bytes."""
    layout = ChallengeLayout(data_dir)
    frames = []
    for subset, csv in (("train", layout.x_train), ("test", layout.x_test)):
        raw = read_features(csv)
        raw["image"] = [
            str(layout.image_path(i, p, subset)) for i, p in zip(raw["imageid"], raw["productid"])
        ]
        frames.append(raw)
    raw = pd.concat(frames, ignore_index=True)
    fresh = [Path(p).is_file() and Path(p).name not in trained_on for p in raw["image"]]
    raw = raw[fresh].drop_duplicates("image").head(n).reset_index(drop=True)
    return product_inputs(raw)


def hit_rate(kind: str, before: tuple[int, int]) -> float:
    now = counts(kind)
    hits, misses = now.hits - before[0], now.misses - before[1]
    return hits / (hits + misses) if hits + misses else 0.0


def snapshot(kind: str) -> tuple[int, int]:
    now = counts(kind)
    return now.hits, now.misses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feature-mb", type=int, default=5)
    parser.add_argument("--ocr-mb", type=int, default=1)
    parser.add_argument("--photos", type=int, default=600)
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--again", type=int, default=100)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # a line per call
    data_dir = args.data_dir or get_settings().data_dir
    with tempfile.TemporaryDirectory(prefix="prodclass-cache-bound-") as tmp:
        run(args, data_dir, Path(tmp))


def run(args: argparse.Namespace, data_dir: Path, tmp: Path) -> None:
    # ---- a trained model, its own caches unbounded ------------------------------------------
    use_state(tmp / "train-state", 0, 0)
    settings = get_settings()
    params = load_params(settings.params_file).family_params(FAMILY) | {"ocr": "all"}
    validated = validate(data_dir, workers=settings.image_check_workers)
    prepare(validated, tmp / "prepared", SplitParams())
    train = load_prepared(tmp / "prepared", "train")
    train = train[train["image_path"] != ""].sample(frac=1.0, random_state=0).head(args.train)
    start = time.perf_counter()
    model = create(FAMILY, params)
    model.fit(train)
    folder = model.save(tmp / "model")
    print(f"{FAMILY} trained on {len(train)} products in {time.perf_counter() - start:.0f} s")

    # ---- serving: a fresh state folder under the caps ---------------------------------------
    use_state(tmp / "serve-state", args.feature_mb, args.ocr_mb)
    feature_dir, ocr_dir = tmp / "serve-state/feature-cache", tmp / "serve-state/ocr-cache"
    predictor = Predictor.load_folder(folder, str(folder), None, "folder")
    predictor.model.inference_threads = get_settings().api_torch_threads  # as the API does
    trained_on = {Path(p).name for p in train["image_path"]}
    products = new_products(data_dir, trained_on, args.photos)
    caps = f"caps: features {args.feature_mb} MB, OCR {args.ocr_mb} MB"
    print(f"{len(products)} new products with a photo, {args.batch} per call; {caps}")
    print(f"{'sent':>5} {'features MB':>12} {'/cap':>5} {'OCR MB':>7} {'/cap':>5} "
          f"{'evicted (feat, OCR)':>20} {'s/call':>7}")  # fmt: skip
    worst = {"feature": 0, "ocr": 0}
    for start_row in range(0, len(products), args.batch):
        began = time.perf_counter()
        predictor.predict(products[start_row : start_row + args.batch])
        took = time.perf_counter() - began
        sizes = {"feature": folder_bytes(feature_dir), "ocr": folder_bytes(ocr_dir)}
        worst = {k: max(worst[k], v) for k, v in sizes.items()}
        sent = min(start_row + args.batch, len(products))
        print(
            f"{sent:>5} {sizes['feature'] / MIB:>12.2f} {args.feature_mb:>5} "
            f"{sizes['ocr'] / MIB:>7.2f} {args.ocr_mb:>5} "
            f"{counts('feature').evictions:>11} {counts('ocr').evictions:>8} {took:>7.1f}"
        )
    entries = sum(1 for _ in feature_dir.rglob("*.npy"))
    print(
        f"largest size seen: features {worst['feature'] / MIB:.2f} MB (cap {args.feature_mb}), "
        f"OCR {worst['ocr'] / MIB:.2f} MB (cap {args.ocr_mb}); "
        f"{entries} photos' features cached at the end"
    )

    # ---- a second pass: recent products are cached, the oldest were evicted -----------------
    k = min(args.again, len(products) // 2)
    for label, part in (
        (f"the {k} sent last", products[-k:]),
        (f"the {k} sent first", products[:k]),
    ):
        before = {kind: snapshot(kind) for kind in ("feature", "ocr")}
        for start_row in range(0, len(part), args.batch):
            predictor.predict(part[start_row : start_row + args.batch])
        features, words = hit_rate("feature", before["feature"]), hit_rate("ocr", before["ocr"])
        print(f"second pass over {label}: hit rate features {features:.0%}, OCR {words:.0%}")


if __name__ == "__main__":
    main()
