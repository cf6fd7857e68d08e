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


def reliability_bins(
    probabilities: np.ndarray, targets: np.ndarray, bins: int = 15
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bin edges, then per confidence bin: mean confidence, accuracy, count (NaN when empty).

    Same bins as ``calibration.expected_calibration_error`` ((lo, hi], equal width), so the
    figure shows exactly the gaps the ECE averages.
    """
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == targets
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore"):  # empty bins: 0/0 -> NaN, drawn as no bar
        mean_conf = np.bincount(which, weights=confidence, minlength=bins) / counts
        accuracy = np.bincount(which, weights=correct.astype(float), minlength=bins) / counts
    return edges, mean_conf, accuracy, counts


def reliability_diagram_png(
    probabilities: np.ndarray, targets: np.ndarray, path: Path, title: str, bins: int = 15
) -> Path:
    """Accuracy against confidence per bin (a calibrated model sits on the diagonal), with
    the ECE in the title and the share of products per bin underneath.

    ``targets`` are column indices of the true classes in ``probabilities`` (-1: unknown).
    """
    from prodclass.models.calibration import expected_calibration_error

    ece = expected_calibration_error(probabilities, targets, bins=bins)
    edges, mean_conf, accuracy, counts = reliability_bins(probabilities, targets, bins)
    width = edges[1] - edges[0]
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(6, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    top.bar(
        edges[:-1],
        np.nan_to_num(accuracy),
        width=width,
        align="edge",
        color="tab:blue",
        edgecolor="white",
        label="accuracy",
    )
    # mean confidence of each bin as a tick: above the bar = overconfident, below = under
    top.scatter(
        edges[:-1] + width / 2,
        mean_conf,
        marker="_",
        s=200,
        linewidths=2,
        color="tab:red",
        label="mean confidence",
        zorder=3,
    )
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"{title}\nECE {ece:.3f} ({bins} bins)")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(
        edges[:-1],
        counts / max(counts.sum(), 1),
        width=width,
        align="edge",
        color="tab:grey",
        edgecolor="white",
    )
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (top probability)")
    bottom.set_ylabel("share of products")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cv_intervals_png(
    rows: list[tuple[str, str, float, float, float]], path: Path, title: str
) -> Path:
    """Weighted F1 per subset with its 95 % interval, one marker per candidate.

    ``rows``: (candidate, subset, estimate, low, high).
    """
    candidates = list(dict.fromkeys(r[0] for r in rows))
    subsets = list(dict.fromkeys(r[1] for r in rows))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(subsets), 4))
    width = 0.8 / max(len(candidates), 1)
    for k, candidate in enumerate(candidates):
        mine = [r for r in rows if r[0] == candidate]
        x = [subsets.index(r[1]) - 0.4 + width * (k + 0.5) for r in mine]
        y = np.array([r[2] for r in mine])
        err = np.array([[r[2] - r[3] for r in mine], [r[4] - r[2] for r in mine]])
        ax.errorbar(x, y, yerr=err, fmt="o", capsize=4, label=candidate)
    ax.set_xticks(range(len(subsets)), subsets)
    ax.set_ylabel("weighted F1 (out of fold, 95 % interval)")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
