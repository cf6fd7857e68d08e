"""Multinomial logistic regression in PyTorch: one ``nn.Linear``, trained full batch by L-BFGS.

Why not scikit-learn's: the members of the late-fusion family are PyTorch end to end (one
state_dict per member in the model folder); full-batch L-BFGS on a few thousand rows of pooled
features converges in about a second and is deterministic.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class LinearSoftmax(nn.Module):
    """(N, D) features -> (N, C) logits."""

    def __init__(self, in_dim: int, n_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

    def logits(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self(torch.from_numpy(np.asarray(x, np.float32))).numpy()


def fit_linear_softmax(
    x: np.ndarray,  # (N, D)
    y: np.ndarray,  # (N,) class indices in 0..n_classes-1
    n_classes: int,
    C: float,
    sample_weight: np.ndarray | None = None,  # (N,)
    max_iter: int = 300,
    seed: int = 42,
) -> LinearSoftmax:
    """Minimise the (weighted) mean cross-entropy + ||W||^2 / (2 C N), the objective of
    scikit-learn's LogisticRegression(C) divided by N (the bias is not penalised)."""
    torch.manual_seed(seed)
    features = torch.from_numpy(np.asarray(x, np.float32))
    targets = torch.from_numpy(np.asarray(y, np.int64))
    weights = (
        torch.ones(len(targets))
        if sample_weight is None
        else torch.as_tensor(sample_weight, dtype=torch.float32)
    )
    weights = weights / weights.mean()
    model = LinearSoftmax(features.shape[1], n_classes)
    nn.init.zeros_(model.linear.weight)
    nn.init.zeros_(model.linear.bias)
    l2 = 1.0 / (2.0 * C * len(targets))
    optimizer = torch.optim.LBFGS(
        model.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        per_row = nn.functional.cross_entropy(model(features), targets, reduction="none")
        loss = (per_row * weights).mean() + l2 * model.linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return model.eval()
