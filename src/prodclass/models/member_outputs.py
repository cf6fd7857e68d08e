"""Members' answers in a model's own class order: what fusion and stacking combine."""

from __future__ import annotations

import numpy as np

FLOOR = 1e-6  # probability of a class a member never saw


def aligned_logproba(
    classes: np.ndarray, member_classes: np.ndarray, proba: np.ndarray
) -> np.ndarray:
    """(n, C) log of a member's (n, K) probabilities in ``classes`` order; a class the member
    never saw gets the ``FLOOR`` probability."""
    index = {int(c): i for i, c in enumerate(classes)}
    out = np.full((len(proba), len(classes)), FLOOR, dtype=np.float32)
    out[:, [index[int(c)] for c in member_classes]] = proba
    return np.log(np.clip(out, FLOOR, 1.0))
