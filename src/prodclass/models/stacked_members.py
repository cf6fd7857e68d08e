"""The stacked members of `multimodal-effnet`: the strong simple model of each modality.

A TF-IDF + linear model over the product's words, and a logistic regression over the frozen
pretrained photo features. They are fitted out of fold on the training rows, so the net sees
how good they are on products they never saw, and it starts from their combined answer (late
fusion, each member weighed by a stacker fitted on those out-of-fold answers) and learns
corrections: with 2,000 products, a net left to learn everything alone did worse than either
member. Every answer is an (N, C) array of log-probabilities in the model's class order, zeros
for a product the member has nothing to say about (no words, no photo).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from prodclass.models.effnet_inputs import NetInputs
from prodclass.models.member_outputs import aligned_logproba
from prodclass.models.tfidf_linear import TfidfLinearClassifier, TfidfLinearParams

log = logging.getLogger(__name__)

TFIDF_DIR = "tfidf"  # the members' files in the model folder
PHOTO_MEMBER_FILE = "photo_member.joblib"


@dataclass(frozen=True)
class Stacking:
    """Which members a configuration stacks, and how their out-of-fold answers are made."""

    text: bool  # the TF-IDF member, over the product's words
    photo: bool  # the photo member, over the frozen pooled photo features
    tfidf: dict[str, Any]  # the TF-IDF member's ``TfidfLinearParams`` fields
    photo_C: float  # the photo member's inverse regularisation strength
    folds: int
    seed: int

    @property
    def count(self) -> int:
        return int(self.text) + int(self.photo)


def oof_answers(
    stacking: Stacking,
    classes: np.ndarray,
    inp: NetInputs,
    labels: pd.Series,
    variants: tuple[str, ...],
) -> dict[str, np.ndarray]:
    """The training rows' out-of-fold member answers, per variant, side by side
    (``stack_variants``)."""
    text: dict[str, np.ndarray] | None = None
    photo: np.ndarray | None = None
    if stacking.text:
        text = oof_tfidf_logproba(
            classes,
            labels.to_numpy(),
            inp.words,
            variants,
            stacking.tfidf,
            stacking.folds,
            stacking.seed,
        )
    if stacking.photo:
        assert inp.photo_features is not None
        codes = np.asarray([int(c) for c in labels])
        photo = oof_photo_logproba(
            classes,
            codes,
            inp.photo_features,
            inp.has_image,
            stacking.photo_C,
            stacking.folds,
            stacking.seed,
        )
    return stack_variants(variants, text, photo)


def fit_members(
    stacking: Stacking, inp: NetInputs, labels: pd.Series
) -> tuple[TfidfLinearClassifier | None, LogisticRegression | None]:
    """The members the model keeps, fitted on every training row (None: not stacked, or no
    photo to learn from)."""
    tfidf: TfidfLinearClassifier | None = None
    photo: LogisticRegression | None = None
    if stacking.text:
        tfidf = fit_tfidf_member(inp.words["full"], labels.to_numpy(), stacking.tfidf)
    if inp.photo_features is not None and inp.has_image.any():
        codes = np.asarray(labels, dtype=int)[inp.has_image]
        photo = fit_photo_member(inp.photo_features, codes, stacking.photo_C)
    return tfidf, photo


def answers(
    stacking: Stacking,
    classes: np.ndarray,
    tfidf: TfidfLinearClassifier | None,
    photo_member: LogisticRegression | None,
    inp: NetInputs,
    variants: tuple[str, ...],
) -> dict[str, np.ndarray]:
    """The fitted members' answers, per variant, side by side (``stack_variants``)."""
    text: dict[str, np.ndarray] | None = None
    photo: np.ndarray | None = None
    if stacking.text:
        text = {v: tfidf_logproba(classes, tfidf, inp.words[v]) for v in variants}
    if stacking.photo:
        assert inp.photo_features is not None
        photo = photo_logproba(classes, photo_member, inp.photo_features[:, 0], inp.has_image)
    return stack_variants(variants, text, photo)


# ---- photo member -----------------------------------------------------------------------
def fit_photo_member(features: np.ndarray, labels: np.ndarray, C: float) -> LogisticRegression:
    """The photo member, taught by every view of each photo: (n, V, D) features, (n,)."""
    member = LogisticRegression(C=C, class_weight="balanced", max_iter=2000)
    views = features.shape[1]
    return member.fit(features.reshape(-1, features.shape[2]), np.repeat(labels, views))


def photo_logproba(
    classes: np.ndarray,
    member: LogisticRegression | None,
    features: np.ndarray,
    has_image: np.ndarray,
) -> np.ndarray:
    """(N, C) log-probabilities of the photo member; ``features`` holds one (D,) row per
    product with a photo."""
    out = np.zeros((len(has_image), len(classes)), dtype=np.float32)
    if member is not None and has_image.any():
        out[has_image] = aligned_logproba(classes, member.classes_, member.predict_proba(features))
    return out


def oof_photo_logproba(
    classes: np.ndarray,
    labels: np.ndarray,
    features: np.ndarray,
    has_image: np.ndarray,
    C: float,
    folds: int,
    seed: int,
) -> np.ndarray:
    """Out-of-fold photo member log-probabilities of the training rows (every view of a
    fold's photos teaches it; held-out photos are scored as they are, unmirrored).
    ``labels``: (N,) codes; ``features``: (N_photo, V, D)."""
    out = np.zeros((len(has_image), len(classes)), dtype=np.float32)
    if has_image.sum() < 2 * folds:
        log.warning("too few photos (%d) to stack the photo member", has_image.sum())
        return out
    y = labels[has_image]
    photo_rows = np.flatnonzero(has_image)
    splits = StratifiedKFold(folds, shuffle=True, random_state=seed).split(features, y)
    for fold_train, fold_out in splits:
        member = fit_photo_member(features[fold_train], y[fold_train], C)
        proba = member.predict_proba(features[fold_out, 0])
        out[photo_rows[fold_out]] = aligned_logproba(classes, member.classes_, proba)
    return out


# ---- TF-IDF member ----------------------------------------------------------------------
def fit_tfidf_member(
    words: list[str], labels: np.ndarray, params: dict[str, Any]
) -> TfidfLinearClassifier:
    """A TF-IDF member (``TfidfLinearParams`` fields in ``params``) taught by products' words."""
    member = TfidfLinearClassifier(TfidfLinearParams(**params))
    member.fit(pd.DataFrame({"text": words, "label": labels}))
    return member


def tfidf_logproba(
    classes: np.ndarray, member: TfidfLinearClassifier | None, words: list[str]
) -> np.ndarray:
    """(N, C) log-probabilities of a TF-IDF member (zeros where a product has no words)."""
    out = np.zeros((len(words), len(classes)), dtype=np.float32)
    rows = np.flatnonzero([bool(w) for w in words])
    if member is None or len(rows) == 0:
        return out
    proba = member.predict_proba(pd.DataFrame({"text": [words[r] for r in rows]}))
    out[rows] = aligned_logproba(classes, member.classes_, proba)
    return out


def oof_tfidf_logproba(
    classes: np.ndarray,
    labels: np.ndarray,
    words: dict[str, list[str]],
    variants: tuple[str, ...],
    params: dict[str, Any],
    folds: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Out-of-fold TF-IDF member log-probabilities of the training rows, per variant of their
    words: each row is scored by a member that never saw it (taught by full words), so the net
    learns how good the member is on unseen data."""
    n = len(labels)
    out = {v: np.zeros((n, len(classes)), dtype=np.float32) for v in variants}
    positions = np.flatnonzero([bool(w) for w in words["full"]])
    splits = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for fold_train, fold_out in splits.split(positions, labels[positions]):
        rows = positions[fold_train]
        member = fit_tfidf_member([words["full"][r] for r in rows], labels[rows], params)
        held_out = positions[fold_out]
        for v in variants:
            out[v][held_out] = tfidf_logproba(classes, member, [words[v][r] for r in held_out])
    return out


# ---- side by side -----------------------------------------------------------------------
def stack_variants(
    variants: tuple[str, ...], text: dict[str, np.ndarray] | None, photo: np.ndarray | None
) -> dict[str, np.ndarray]:
    """Variant -> (N, members * C) the members' answers side by side, text member first (no
    entry without members); a hidden photo hides its member's answer too."""
    parts: dict[str, list[np.ndarray]] = {v: [] for v in variants}
    for v in variants:
        if text is not None:
            parts[v].append(text[v])
        if photo is not None:
            parts[v].append(np.zeros_like(photo) if v == "text_only" else photo)
    return {v: np.concatenate(parts[v], axis=1) for v in variants if parts[v]}


# ---- in the model folder ----------------------------------------------------------------
def save_members(
    path: Path, tfidf: TfidfLinearClassifier | None, photo: LogisticRegression | None
) -> None:
    """Write the members the model has into folder ``path``."""
    if tfidf is not None:
        tfidf.save(path / TFIDF_DIR)
    if photo is not None:
        joblib.dump(photo, path / PHOTO_MEMBER_FILE, compress=3)


def load_members(path: Path) -> tuple[TfidfLinearClassifier | None, LogisticRegression | None]:
    """The members saved in folder ``path`` (None for one the model has not)."""
    tfidf: TfidfLinearClassifier | None = None
    photo: LogisticRegression | None = None
    if (path / TFIDF_DIR).is_dir():
        tfidf = TfidfLinearClassifier.load(path / TFIDF_DIR)  # type: ignore[assignment]
    if (path / PHOTO_MEMBER_FILE).is_file():
        photo = joblib.load(path / PHOTO_MEMBER_FILE)
    return tfidf, photo
