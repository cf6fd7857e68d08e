"""How the late-fusion family combines its members' answers for a product that has both.

Both ways are fitted on out-of-fold member log-probabilities (each training product scored by
members that never saw it), so they learn how good each member is on unseen products:

- weighted: log p = w log p_text + (1 - w) log p_photo, one w from a grid, then a temperature;
- stacked: a multinomial logistic regression over the two members' log-probabilities side by
  side (it may trust a member more for some classes), then a temperature.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

from prodclass.models.calibration import fit_temperature
from prodclass.models.linear_softmax import LinearSoftmax, fit_linear_softmax

WEIGHT_GRID = np.round(np.linspace(0.0, 1.0, 21), 2)
STACK_C_GRID = (0.001, 0.01, 0.1, 1.0)  # inverse L2 strengths the stacker chooses from


def log_softmax(logits: np.ndarray) -> np.ndarray:
    return torch.log_softmax(torch.as_tensor(logits, dtype=torch.float32), dim=1).numpy()


def _nll(logits: np.ndarray, y: np.ndarray) -> float:
    return float(-log_softmax(logits)[np.arange(len(y)), y].mean())


@dataclass
class Fusion:
    """One fitted fusion: ``weight`` (weighted) or ``stacker`` (stacked), then temperature."""

    kind: str  # "weighted" | "stacked"
    weight: float = 0.5
    stacker: LinearSoftmax | None = None
    temperature: float = 1.0

    def logits(self, text: np.ndarray, photo: np.ndarray) -> np.ndarray:
        """(N, C) calibrated fused logits of the members' (N, C) log-probabilities."""
        if self.kind == "stacked" and self.stacker is not None:
            z = self.stacker.logits(np.concatenate([text, photo], axis=1))
        else:
            z = self.weight * text + (1.0 - self.weight) * photo
        return z / self.temperature


def fit_weighted(text: np.ndarray, photo: np.ndarray, y: np.ndarray) -> Fusion:
    """The grid weight whose temperature-scaled fusion has the lowest out-of-fold NLL (ties:
    the weight nearest 0.5)."""
    best: tuple[float, float, float, float] | None = None  # nll, |w - .5|, w, T
    for w in WEIGHT_GRID:
        z = w * text + (1.0 - w) * photo
        t = fit_temperature(z, y)
        candidate = (round(_nll(z / t, y), 6), abs(w - 0.5), float(w), t)
        if best is None or candidate[:2] < best[:2]:
            best = candidate
    assert best is not None
    return Fusion("weighted", weight=best[2], temperature=best[3])


def fit_stacked(
    text: np.ndarray, photo: np.ndarray, y: np.ndarray, weights: np.ndarray, seed: int
) -> Fusion:
    """Logistic regression over [text, photo] log-probabilities, then a temperature.

    Its L2 strength and temperature come from a 5-fold CV over these rows: with 2 x 27 inputs
    per class and a few hundred products, a lightly regularised stacker separates its training
    rows, and a temperature fitted on them would be near 0 (every answer made certain)."""
    x = np.concatenate([text, photo], axis=1)
    n_classes = text.shape[1]
    folds = _folds(y, seed)
    best: tuple[float, float, float] | None = None  # nll, C, T
    for C in STACK_C_GRID if folds else (STACK_C_GRID[0],):
        oof = np.zeros((len(y), n_classes), np.float32)
        for train_rows, held_out in folds:
            member = fit_linear_softmax(
                x[train_rows], y[train_rows], n_classes, C, weights[train_rows], seed=seed
            )
            oof[held_out] = member.logits(x[held_out])
        t = fit_temperature(oof, y) if folds else 1.0
        candidate = (_nll(oof / t, y), C, t)
        if best is None or candidate[0] < best[0]:
            best = candidate
    assert best is not None
    stacker = fit_linear_softmax(x, y, n_classes, best[1], sample_weight=weights, seed=seed)
    return Fusion("stacked", stacker=stacker, temperature=best[2])


def _folds(y: np.ndarray, seed: int, k: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds of the fused rows ([] when a class-balanced split is impossible)."""
    if len(y) < 2 * k or np.bincount(y).max() < k:
        return []
    with warnings.catch_warnings():  # a class rarer than k lands in fewer folds: fine
        warnings.simplefilter("ignore", UserWarning)
        return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(y, y))
