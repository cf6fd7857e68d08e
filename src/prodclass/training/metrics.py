"""Classification metrics in the one shape every report uses."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from prodclass.data import taxonomy


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """n, accuracy, weighted/macro F1 and per-class precision/recall/F1/support.

    Per-class entries cover the 27 taxonomy codes (support 0 where a code is absent), so
    reports from different data sets line up.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if len(y_true) == 0:
        return {"n": 0, "accuracy": None, "weighted_f1": None, "macro_f1": None, "per_class": {}}
    present = sorted(set(y_true.tolist()))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=list(taxonomy.CODES), zero_division=0
    )
    per_class = {
        str(code): {
            "name": taxonomy.name(code),
            "precision": round(float(p), 4),
            "recall": round(float(r), 4),
            "f1": round(float(f), 4),
            "support": int(s),
        }
        for code, p, r, f, s in zip(taxonomy.CODES, precision, recall, f1, support)
    }
    return {
        "n": int(len(y_true)),
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 4),
        "weighted_f1": round(float(f1_score(y_true, y_pred, average="weighted")), 4),
        # macro over the classes present in y_true, so a subset is not penalised for absent ones
        "macro_f1": round(
            float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)), 4
        ),
        "per_class": per_class,
    }


def target_index(classes: np.ndarray, y_true: np.ndarray) -> np.ndarray:
    """Column of each true label in a probability matrix ordered by ``classes``; -1 when the
    model does not know the label (such a row can only count as an error)."""
    column = {int(c): i for i, c in enumerate(classes)}
    return np.asarray([column.get(int(y), -1) for y in y_true], dtype=np.int64)


def calibration_error(probabilities: np.ndarray, classes: np.ndarray, y_true: np.ndarray) -> float:
    """Expected calibration error (15 bins) of (N, C) probabilities against true labels."""
    # imported here: the calibration module needs torch, which a TF-IDF evaluation does not
    from prodclass.models.calibration import expected_calibration_error

    if len(y_true) == 0:
        return 0.0
    return expected_calibration_error(probabilities, target_index(classes, y_true))


def summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of a metrics dict (no per-class detail)."""
    return {k: metrics[k] for k in ("n", "accuracy", "weighted_f1", "macro_f1")}


def f1_from_confusions(confusions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted and macro F1 of a stack of (B, C, C) confusion matrices (rows: truth).

    The same definitions as ``classification_metrics`` (macro over the classes present in the
    truth), computed from counts so a bootstrap of thousands of resamples stays fast: a
    resample is a confusion matrix weighted by how often each product was drawn.
    """
    confusions = np.asarray(confusions, dtype=np.float64)
    tp = np.diagonal(confusions, axis1=1, axis2=2)
    support = confusions.sum(axis=2)
    predicted = confusions.sum(axis=1)
    denominator = support + predicted
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    total = support.sum(axis=1)
    weighted = (f1 * support).sum(axis=1) / np.maximum(total, 1e-12)
    present = support > 0
    macro = (f1 * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1)
    return weighted, macro
