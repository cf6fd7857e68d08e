"""Where a product goes (train/val/test, or one of K cross-validation folds): a hash of its id.

Why a hash and not a ranked, exactly stratified cut: a product's place depends on its own id
and the seed only, so adding products never moves an old one (a rank-based cut shifts every
boundary when a class grows, and yesterday's test products leak into today's training).
Exact per-class proportions are traded for that stability: within each class the hash spreads
products evenly in expectation, and over 6k products a fold's class mix is within a few
products of the whole sample's. The one rule serves every held-out part, so the folds, the
held-out splits and a torch family's inner validation part are all reproducible from ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")
_HASH_SPACE = float(2**160)  # sha1 digests are 160-bit integers


def _digest(seed: int, row_id: str) -> int:
    return int(hashlib.sha1(f"{seed}:{row_id}".encode()).hexdigest(), 16)


def hash_unit(row_ids: Iterable[object], seed: int) -> np.ndarray:
    """Each id's fixed point of the unit interval [0, 1)."""
    return np.asarray([_digest(seed, str(r)) / _HASH_SPACE for r in row_ids], dtype=np.float64)


def hash_folds(row_ids: Iterable[object], folds: int, seed: int) -> np.ndarray:
    """Each id's fold in 0..folds-1 (sha1 of ``"{seed}:{id}"`` modulo ``folds``)."""
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, not {folds}")
    return np.asarray([_digest(seed, str(r)) % folds for r in row_ids], dtype=np.int64)


def held_out_mask(row_ids: Iterable[object], fraction: float, seed: int) -> np.ndarray:
    """True for the ids whose hash falls in the first ``fraction`` of the unit interval."""
    return hash_unit(row_ids, seed) < fraction


def product_keys(products: pd.DataFrame) -> pd.Index:
    """What a product's place is hashed from: its ``productid`` when the frame has one (a
    reviewer's correction of a catalogue product then lands where that product is), else the
    frame's index (the row id)."""
    if "productid" in products.columns:
        return pd.Index(products["productid"].astype(str))
    return products.index


def hashed_split(products: pd.DataFrame, val_size: float, test_size: float, seed: int) -> pd.Series:
    """Assign each row (by ``product_keys``) to train/val/test.

    The hash's unit interval is cut in buckets: [0, test_size) is test, the next
    ``val_size`` is val, the rest is train. Row order and other rows change nothing.
    """
    if not 0 < val_size < 1 or not 0 < test_size < 1 or val_size + test_size >= 1:
        raise ValueError("val_size and test_size must be in (0, 1) and sum below 1")
    unit = hash_unit(product_keys(products), seed)
    assignment = np.where(
        unit < test_size, "test", np.where(unit < test_size + val_size, "val", "train")
    )
    return pd.Series(assignment, index=products.index, dtype=object)


def stratified_subset(products: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """About ``n`` products keeping each class's share (at least one per class), chosen by the
    hash order within the class so a quick run is reproducible and nests in a larger one."""
    if n >= len(products):
        return products
    unit = pd.Series(hash_unit(product_keys(products), seed), index=products.index)
    share = n / len(products)
    keep: list[object] = []
    for _, members in products.groupby("label").groups.items():
        ordered = unit.loc[members].sort_values().index
        keep += list(ordered[: max(1, round(len(ordered) * share))])
    return products.loc[products.index.isin(keep)]
