"""CLIP's training signal and its retrieval measure, independent of what the towers are.

InfoNCE: in a batch of B (photo, text) pairs, each photo must pick its own text among the B
texts and each text its own photo; the loss is the mean of both cross-entropies over the
cosine similarities times a learned scale (CLIP's inverse temperature, kept at most 100).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

INIT_LOGIT_SCALE = math.log(1 / 0.07)  # CLIP's initial temperature
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps the scale at 100


class LogitScale(nn.Module):
    """The learned inverse temperature, stored as a log (positive, smooth to optimise)."""

    def __init__(self, init: float = INIT_LOGIT_SCALE) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(float(init)))

    def forward(self) -> torch.Tensor:
        return self.log_scale.clamp(max=MAX_LOGIT_SCALE).exp()


def info_nce(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of B aligned rows: image (B, D), text (B, D), any norm."""
    image = F.normalize(image, dim=1)
    text = F.normalize(text, dim=1)
    logits = scale * image @ text.T  # (B, B); the diagonal holds the true pairs
    targets = torch.arange(len(image))
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def recall_at(queries: np.ndarray, keys: np.ndarray, ks: tuple[int, ...] = (1, 10)) -> dict:
    """Share of queries whose own key (same row) is among their k most similar keys (cosine),
    for each k. ``queries`` (N, D), ``keys`` (N, D): row i of each is one pair."""
    q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    k = keys / np.maximum(np.linalg.norm(keys, axis=1, keepdims=True), 1e-12)
    scores = q @ k.T  # (N, N)
    own = np.diag(scores)[:, None]
    rank = (scores > own).sum(axis=1)  # 0: the own key is the best (ties count for it)
    return {f"recall@{n}": round(float((rank < n).mean()), 4) for n in ks}
