"""Per-product training weights from the class mix: balanced, the real catalogue's, or none.

Why "catalogue": the sample mixes near-balanced demo rows with a slice of the real catalogue;
weighting each class by catalogue share / sample share makes training see the class mix that
products really arrive with (a prior correction), instead of pretending classes are equal.
The catalogue's mix is ``class_distribution_full_train.csv`` of the data folder (prdtypecode,
count, share: per-class rows of the full 84,916-row training set).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

CATALOGUE_FILE = "class_distribution_full_train.csv"
ClassWeight = Literal["balanced", "catalogue", "none"]


class ClassMixError(ValueError):
    """The catalogue class-mix file is missing, malformed or does not cover the classes."""


def catalogue_shares(path: Path) -> dict[int, float]:
    """Share of each product type in the catalogue, from its per-class counts."""
    if not path.is_file():
        raise ClassMixError(f"catalogue class mix not found: {path}")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ClassMixError(f"{path.name} is not a readable CSV: {exc}") from exc
    missing = {"prdtypecode", "count"} - set(frame.columns)
    if missing:
        raise ClassMixError(f"{path.name} lacks the column(s) {', '.join(sorted(missing))}")
    codes = pd.to_numeric(frame["prdtypecode"], errors="coerce")
    counts = pd.to_numeric(frame["count"], errors="coerce")
    bad = frame.index[codes.isna() | counts.isna() | (counts <= 0) | (codes % 1 != 0)]
    if len(bad):
        raise ClassMixError(
            f"{path.name}: rows {', '.join(str(i + 2) for i in bad[:5])} need an integer "
            "prdtypecode and a positive count"
        )
    if codes.duplicated().any():
        raise ClassMixError(f"{path.name}: a prdtypecode is listed twice")
    total = float(counts.sum())
    return {int(c): float(n) / total for c, n in zip(codes, counts)}


def row_weights(
    labels: np.ndarray, mode: ClassWeight, catalogue: dict[int, float] | None = None
) -> np.ndarray:
    """(N,) weights of products labelled ``labels`` (codes), mean 1."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0 or mode == "none":
        return np.ones(len(labels))
    codes, counts = np.unique(labels, return_counts=True)
    sample_share = dict(zip(codes.tolist(), (counts / len(labels)).tolist()))
    if mode == "balanced":
        per_class = {c: 1.0 / (len(codes) * s) for c, s in sample_share.items()}
    elif mode == "catalogue":
        if catalogue is None:
            raise ValueError("catalogue weights need the catalogue's class shares")
        unknown = sorted(set(sample_share) - set(catalogue))
        if unknown:
            raise ClassMixError(f"the catalogue class mix has no share for {unknown}")
        per_class = {c: catalogue[c] / s for c, s in sample_share.items()}
    else:
        raise ValueError(f"unknown class weighting {mode!r}")
    weights = np.asarray([per_class[int(c)] for c in labels])
    return weights / weights.mean()
