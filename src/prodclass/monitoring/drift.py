"""Drift tests: production inputs and answers against the serving model's reference profile.

Per feature: Kolmogorov-Smirnov (numeric) or chi-square (categorical) for significance, and the
population stability index (PSI) for size: a feature drifts only when the shift is both
significant (p < ``p_value``) and large (PSI >= ``psi``), so big samples do not alarm on
trivia. On the model's embeddings: maximum mean discrepancy (RBF kernel on unit vectors) with a
permutation test, per modality. Plus the predicted-class mix and the confidence of answers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse, stats

from prodclass.monitoring.features import CATEGORICAL, NUMERIC
from prodclass.monitoring.profile import ReferenceProfile
from prodclass.serving.similarity import unit_rows

EPS = 1e-4


@dataclass(frozen=True)
class DriftThresholds:
    p_value: float = 0.01
    psi: float = 0.2
    min_samples: int = 50
    embedding_samples: int = 300
    permutations: int = 200
    seed: int = 42


@dataclass
class DriftTest:
    name: str  # feature, "inputs", "predicted_class", "confidence" or "embedding:<modality>"
    test: str  # ks, chi2, mmd
    statistic: float
    p_value: float
    psi: float | None
    n_reference: int
    n_current: int
    drifted: bool


def psi_numeric(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        return 0.0
    edges[0], edges[-1] = -np.inf, np.inf
    ref = np.histogram(reference, edges)[0] / len(reference)
    cur = np.histogram(current, edges)[0] / len(current)
    return psi_shares(ref, cur)


def psi_shares(reference: np.ndarray, current: np.ndarray) -> float:
    ref, cur = np.clip(reference, EPS, None), np.clip(current, EPS, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _categorical(
    name: str, reference: dict[Any, float], current: pd.Series, n_reference: int, t: DriftThresholds
) -> DriftTest:
    counts = current.value_counts()
    keys = sorted(set(reference) | set(counts.index), key=str)
    ref = np.array([reference.get(k, 0.0) for k in keys], dtype=float)
    ref = np.clip(ref / max(ref.sum(), EPS), EPS, None)
    ref = ref / ref.sum()
    cur = np.array([counts.get(k, 0) for k in keys], dtype=float)
    statistic, p = stats.chisquare(cur, ref * cur.sum())
    psi = psi_shares(ref, cur / cur.sum())
    drifted = bool(p < t.p_value and psi >= t.psi)
    return DriftTest(
        name, "chi2", float(statistic), float(p), psi, n_reference, int(cur.sum()), drifted
    )


def _numeric(
    name: str, reference: np.ndarray, current: np.ndarray, t: DriftThresholds
) -> DriftTest:
    statistic, p = stats.ks_2samp(reference, current)
    psi = psi_numeric(reference, current)
    drifted = bool(p < t.p_value and psi >= t.psi)
    return DriftTest(
        name, "ks", float(statistic), float(p), psi, len(reference), len(current), drifted
    )


def mmd_permutation(x: Any, y: Any, permutations: int, seed: int) -> tuple[float, float]:
    """Squared MMD of two samples of unit vectors (RBF kernel, median bandwidth) and its
    permutation p-value."""
    z = sparse.vstack([x, y]) if sparse.issparse(x) else np.vstack([x, y])
    gram = z @ z.T
    gram = np.asarray(gram.todense() if sparse.issparse(gram) else gram, dtype=np.float64)
    distance = np.clip(2 - 2 * gram, 0, None)
    off_diagonal = distance[~np.eye(len(distance), dtype=bool)]
    bandwidth = float(np.median(off_diagonal)) or 1.0
    kernel = np.exp(-distance / bandwidth)
    n = x.shape[0]

    def mmd(labels: np.ndarray) -> float:
        a, b = labels[:n], labels[n:]
        return float(
            kernel[np.ix_(a, a)].mean()
            + kernel[np.ix_(b, b)].mean()
            - 2 * kernel[np.ix_(a, b)].mean()
        )

    order = np.arange(len(kernel))
    observed = mmd(order)
    rng = np.random.default_rng(seed)
    exceed = sum(mmd(rng.permutation(order)) >= observed for _ in range(permutations))
    return observed, (exceed + 1) / (permutations + 1)


def detect_drift(
    reference: ReferenceProfile,
    current_features: pd.DataFrame,
    predicted: pd.Series,
    confidences: pd.Series,
    current_embeddings: dict[str, Any],
    thresholds: DriftThresholds = DriftThresholds(),
) -> dict[str, Any]:
    """Compare production with the reference; the report says which tests drifted and why."""
    t = thresholds
    tests: list[DriftTest] = []
    n_current = len(current_features)
    if n_current < t.min_samples:
        return {
            "decision": "not enough data",
            "drift": False,
            "n_current": n_current,
            "min_samples": t.min_samples,
            "tests": [],
        }
    ref = reference.features
    for name in NUMERIC:
        r = ref[name].dropna().to_numpy(float) if name in ref else np.array([])
        c = current_features[name].dropna().to_numpy(float)
        if len(r) >= t.min_samples and len(c) >= t.min_samples:
            tests.append(_numeric(name, r, c, t))
    for name in CATEGORICAL:
        shares = ref[name].value_counts(normalize=True).to_dict()
        tests.append(_categorical(name, shares, current_features[name], len(ref), t))
    n_val = len(reference.confidences)
    tests.append(_categorical("predicted_class", reference.predicted, predicted, n_val, t))
    tests.append(
        _numeric("confidence", np.asarray(reference.confidences), confidences.to_numpy(float), t)
    )
    modalities = [m for m in reference.embeddings if m in current_embeddings]
    for modality in modalities:
        r, c = reference.embeddings[modality], unit_rows(current_embeddings[modality])[0]
        if r.shape[0] < t.min_samples or c.shape[0] < t.min_samples:
            continue
        rng = np.random.default_rng(t.seed)
        c = c[rng.permutation(c.shape[0])[: t.embedding_samples]]
        statistic, p = mmd_permutation(r, c, t.permutations, t.seed)
        drifted = bool(p < t.p_value / max(1, len(modalities)))
        tests.append(
            DriftTest(
                f"embedding:{modality}", "mmd", statistic, p, None, r.shape[0], c.shape[0], drifted
            )
        )
    drifted = [test.name for test in tests if test.drifted]
    mean_confidence = float(confidences.mean())
    return {
        "decision": "drift" if drifted else "no drift",
        "drift": bool(drifted),
        "drifted": drifted,
        "n_current": n_current,
        "thresholds": asdict(t),
        "confidence_mean": {
            "reference": float(np.mean(reference.confidences)),
            "current": mean_confidence,
        },
        "tests": [asdict(test) for test in tests],
    }
