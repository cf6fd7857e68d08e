"""The catalogue's unlabelled products (``X_test_update.csv`` and ``images/image_test``), in
the frame models read, validated like any input.

Why: semi-supervised training may pseudo-label them, and contrastive alignment needs no label,
so every product with both a photo and words teaches it. They are never in a cross-validation
fold (they have no label), so using them in a fit cannot leak a held-out product.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import pandas as pd

from prodclass.data.layout import X_TEST

log = logging.getLogger(__name__)


class UnlabelledDataError(ValueError):
    """The folder named for unlabelled products cannot give any; the message says why."""


def unlabelled_products(data_dir: Path) -> pd.DataFrame:
    """``text``, ``title`` and ``image_path`` ('' when absent) of every usable unlabelled product
    (unusable photos and rows are left out and counted in the log)."""
    products = _validated(data_dir)[["text", "title", "image_path"]].copy()
    products.index = [f"unlabelled-{i}" for i in products.index]  # never a labelled row's id
    return products


def unlabelled_pairs(data_dir: Path) -> pd.DataFrame:
    """The unlabelled products that have both a photo and words."""
    products = unlabelled_products(data_dir)
    return products[(products["text"] != "") & (products["image_path"] != "")]


def _validated(data_dir: Path) -> pd.DataFrame:
    folder = Path(data_dir).resolve()
    if not (folder / X_TEST).is_file():
        raise UnlabelledDataError(
            f"no {X_TEST} in {folder}: point the family's unlabelled_dir (or PRODCLASS_DATA_DIR) "
            "at a folder in the challenge layout, or set unlabelled=false"
        )
    stamp = (folder / X_TEST).stat().st_mtime_ns
    return _products(str(folder), stamp)


@functools.lru_cache(maxsize=4)
def _products(folder: str, stamp: int) -> pd.DataFrame:
    """Validated once per folder and file version (each CV fold asks again)."""
    from prodclass.data.validate import validate

    data = validate(Path(folder), subset="test")
    products = data.products
    both = products[(products["text"] != "") & (products["image_path"] != "")]
    log.info(
        "unlabelled products in %s: %d accepted, %d with a photo and words (%d rejected)",
        folder,
        len(products),
        len(both),
        data.report.n_rejected,
    )
    return products
