"""Behaviour every multimodal family owes, checked the same way for each of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prodclass.models.base import ProductClassifier


def both_modality_rows(frame: pd.DataFrame, n: int = 8) -> pd.DataFrame:
    rows = frame[(frame["text"] != "") & (frame["image_path"] != "")].head(n)
    assert len(rows) == n, "the split has too few products with text and photo"
    return rows


def check_distributions_over_codes(
    model: ProductClassifier, frame: pd.DataFrame, codes: tuple[str, ...]
) -> None:
    proba = model.predict_proba(frame)
    assert proba.shape == (len(frame), len(codes))
    assert sorted(str(c) for c in model.classes_) == sorted(codes)
    assert (proba >= 0).all() and np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)


def check_each_modality_predicts(
    model: ProductClassifier, frame: pd.DataFrame, codes: tuple[str, ...]
) -> None:
    """Text only, photo only, both and nothing all get a distribution; hiding either input
    changes the answer; a row's answer does not depend on the rest of its batch."""
    rows = both_modality_rows(frame)
    serving = rows[["text", "image_path"]].reset_index(drop=True)  # what serving passes
    text_only = serving.assign(image_path="")
    image_only = serving.assign(text="")
    nothing = serving.head(1).assign(text="", image_path="")
    mixed = pd.concat([serving, text_only, image_only, nothing], ignore_index=True)
    proba = model.predict_proba(mixed)
    assert proba.shape == (3 * len(rows) + 1, len(codes))
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    n = len(rows)
    both_p, text_p, image_p = proba[:n], proba[n : 2 * n], proba[2 * n : 3 * n]
    assert np.abs(both_p - text_p).max() > 1e-3  # the photo counts
    assert np.abs(both_p - image_p).max() > 1e-3  # the title counts
    np.testing.assert_allclose(model.predict_proba(text_only), text_p, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(model.predict_proba(image_only), image_p, rtol=1e-4, atol=1e-6)


def check_unreadable_photo_refused_by_name(model: ProductClassifier, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_text("not a photo")
    frame = pd.DataFrame({"text": ["piscine"], "image_path": [str(broken)]})
    with pytest.raises(ValueError, match="broken.jpg"):
        model.predict_proba(frame)


def check_embeddings(model: ProductClassifier, frame: pd.DataFrame) -> None:
    """One vector per product and modality; zero where the product lacks the modality; a
    product is closest to itself, and different products are not identical."""
    from scipy import sparse

    rows = both_modality_rows(frame, n=4)[["text", "image_path"]].reset_index(drop=True)
    mixed = pd.concat([rows, rows.assign(image_path=""), rows.assign(text="")], ignore_index=True)
    vectors = model.embed(mixed)
    assert set(vectors) == {"text", "image"}
    for modality, matrix in vectors.items():
        dense = matrix.toarray() if sparse.issparse(matrix) else np.asarray(matrix)
        assert dense.shape[0] == 12 and dense.shape[1] > 1
        missing = slice(8, 12) if modality == "text" else slice(4, 8)
        assert not dense[missing].any(), f"{modality} vectors of products without it"
        unit = dense[:4] / np.linalg.norm(dense[:4], axis=1, keepdims=True)
        cosine = unit @ unit.T
        assert np.allclose(np.diag(cosine), 1, atol=1e-4)
        assert (cosine[~np.eye(4, dtype=bool)] < 0.9999).all()
