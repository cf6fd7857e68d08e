"""Drift detection on real data: the served multimodal model's reference (built when it was
trained on six product types) against streams of real sample products. A held-out stream from
the training distribution raises no alarm at the configured thresholds; streams that drift
(only image-only products, product types the model never saw, titles stripped of their
descriptions) are caught, each by the tests that should catch it."""

from __future__ import annotations

import pandas as pd
import pytest

from prodclass.data.validate import validate
from prodclass.models.registry import load_model_dir
from prodclass.monitoring.check import load_reference
from prodclass.monitoring.drift import DriftThresholds, detect_drift
from prodclass.monitoring.features import product_features
from prodclass.monitoring.profile import embedding_sample
from prodclass.params import load_params
from tests.conftest import PER_CODE, PROJECT_ROOT, SIX_CODES
from tests.serving.conftest import CHAMPION_FAMILY


@pytest.fixture(scope="module")
def model_dir(served):
    return served.state / CHAMPION_FAMILY


@pytest.fixture(scope="module")
def catalogue(sample) -> pd.DataFrame:
    products = validate(sample, check_images=False).products
    return products.assign(label=products["label"].astype(str))


def _run(model_dir, stream: pd.DataFrame) -> dict:
    model = load_model_dir(model_dir)
    reference = load_reference(model_dir)
    frame = stream[["text", "image_path"]].reset_index(drop=True)
    proba = model.predict_proba(frame)
    m = load_params(PROJECT_ROOT / "params.yaml").monitoring
    thresholds = DriftThresholds(m.p_value, m.psi, m.min_samples, m.embedding_samples, 200)
    return detect_drift(
        reference,
        product_features(frame),
        pd.Series(model.classes_[proba.argmax(axis=1)]),
        pd.Series(proba.max(axis=1)),
        embedding_sample(model, frame, thresholds.embedding_samples, 0),
        thresholds,
    )


def _held_out(catalogue: pd.DataFrame, n_per_code: int) -> pd.DataFrame:
    """Products of the six trained types that training did not use (it took the first
    PER_CODE of each)."""
    parts = [
        catalogue[catalogue["label"] == c].iloc[PER_CODE : PER_CODE + n_per_code] for c in SIX_CODES
    ]
    return pd.concat(parts)


def test_a_held_out_stream_from_the_training_distribution_raises_no_alarm(model_dir, catalogue):
    stream = _held_out(catalogue, 40)
    report = _run(model_dir, stream)
    assert report["n_current"] >= 150
    assert report["drift"] is False, report["drifted"]
    assert {t["name"] for t in report["tests"]} >= {"inputs", "text_chars", "embedding:image"}


def test_only_image_only_products_is_caught_by_the_input_mix(model_dir, catalogue):
    pool = catalogue[catalogue["label"].isin(SIX_CODES)].iloc[::-1]  # last rows: unseen
    stream = pool[pool["modality"] == "image_only"].head(120)
    report = _run(model_dir, stream)
    assert report["drift"] is True
    assert "inputs" in report["drifted"]


def test_product_types_the_model_never_saw_are_caught_in_its_embeddings(model_dir, catalogue):
    stream = catalogue[~catalogue["label"].isin(SIX_CODES)].sample(200, random_state=0)
    report = _run(model_dir, stream)
    assert report["drift"] is True
    assert {"embedding:text", "embedding:image"} & set(report["drifted"]), report["drifted"]


def test_titles_without_descriptions_are_caught_in_the_text(model_dir, catalogue):
    stream = _held_out(catalogue, 40)
    stream = stream[stream["text"] != ""].copy()
    stream["text"] = [t.split(". ")[0][:40] for t in stream["text"]]  # a short title only
    report = _run(model_dir, stream)
    assert report["drift"] is True
    assert {"text_chars", "text_words"} & set(report["drifted"]), report["drifted"]
