"""Report figures (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402

from prodclass.data import taxonomy  # noqa: E402


def confusion_matrix_png(y_true: np.ndarray, y_pred: np.ndarray, path: Path, title: str) -> Path:
    """Row-normalised confusion matrix over the 27 codes, saved as PNG."""
    codes = list(taxonomy.CODES)
    matrix = confusion_matrix(y_true, y_pred, labels=codes).astype(float)
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    fig, ax = plt.subplots(figsize=(11, 9))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(codes)), [str(c) for c in codes], rotation=90, fontsize=7)
    ax.set_yticks(range(len(codes)), [f"{c} {taxonomy.name(c)}" for c in codes], fontsize=7)
    ax.set_xlabel("predicted prdtypecode")
    ax.set_ylabel("true prdtypecode")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.04, label="share of the true class")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
