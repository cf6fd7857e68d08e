"""Deterministic stratified train/validation/test split."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")


def _rank_key(seed: int, row_id: str) -> str:
    return hashlib.sha1(f"{seed}:{row_id}".encode()).hexdigest()


def stratified_split(
    products: pd.DataFrame, val_size: float, test_size: float, seed: int
) -> pd.Series:
    """Assign each row to train/val/test, stratified on label and modality.

    Within a stratum rows are ordered by a seeded hash of their id, so the result depends on the
    data and the seed only (not on row order), and a product keeps its split when others are
    added. Rounding is carried over between strata so totals match the requested fractions.
    """
    if not 0 < val_size < 1 or not 0 < test_size < 1 or val_size + test_size >= 1:
        raise ValueError("val_size and test_size must be in (0, 1) and sum below 1")
    strata = products["label"].astype(str) + "|" + products["modality"].astype(str)
    assignment = pd.Series("train", index=products.index, dtype=object)
    carry_val = carry_test = 0.0
    for _, members in sorted(strata.groupby(strata).groups.items()):
        ordered = sorted(members, key=lambda r: _rank_key(seed, str(r)))
        want_test = len(ordered) * test_size + carry_test
        want_val = len(ordered) * val_size + carry_val
        n_test, n_val = int(np.floor(want_test)), int(np.floor(want_val))
        carry_test, carry_val = want_test - n_test, want_val - n_val
        assignment.loc[ordered[:n_test]] = "test"
        assignment.loc[ordered[n_test : n_test + n_val]] = "val"
    return assignment
