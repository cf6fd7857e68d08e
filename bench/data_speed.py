"""Benchmark: validation (with photo decode-check), prepare and TF-IDF training on a data folder.

Usage: .venv/bin/python bench/data_speed.py [DATA_DIR]   (default: PRODCLASS_DATA_DIR)
Prints rows/second per step, so the cost on the full 84,916-product set can be projected.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from prodclass.data.prepare import SplitParams, load_prepared, prepare
from prodclass.data.validate import validate
from prodclass.models.registry import create
from prodclass.settings import get_settings


def main() -> None:
    data_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else get_settings().data_dir
    workers = get_settings().image_check_workers
    start = time.perf_counter()
    validated = validate(data_dir, check_images=False)
    no_images = time.perf_counter() - start
    start = time.perf_counter()
    validated = validate(data_dir, workers=workers)
    with_images = time.perf_counter() - start
    n_rows, n_photos = validated.report.n_rows, int(validated.products["has_image"].sum())
    print(f"validate without photos: {no_images:.2f} s ({n_rows / no_images:,.0f} rows/s)")
    print(
        f"validate with photos:    {with_images:.2f} s ({n_photos / with_images:,.0f} photos/s,"
        f" {workers} threads)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        prepare(validated, Path(tmp), SplitParams())
        print(f"prepare:                 {time.perf_counter() - start:.2f} s")
        train = load_prepared(Path(tmp), "train")
        start = time.perf_counter()
        create("tfidf-linear", {}).fit(train)
        elapsed = time.perf_counter() - start
        n_text = int((train["text"] != "").sum())
        print(f"tfidf-linear fit:        {elapsed:.2f} s ({n_text / elapsed:,.0f} text rows/s)")


if __name__ == "__main__":
    main()
