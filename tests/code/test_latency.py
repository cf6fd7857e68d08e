"""Latency measurement on a tiny real TF-IDF model trained on a few hundred sample rows."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from prodclass.data.prepare import SplitParams, load_prepared, prepare
from prodclass.data.validate import validate
from prodclass.models.registry import create
from prodclass.training.evaluate import evaluate_model
from prodclass.training.latency import (
    MIN_CALLS,
    SERVING_COLUMNS,
    _batches,
    _cold_caches,
    latency_metrics,
    measure_latency,
)

TINY = {
    "word_ngram_max": 1,
    "char_ngram_min": 3,
    "char_ngram_max": 4,
    "max_features_word": 5000,
    "max_features_char": 5000,
    "classifier": "logreg",
}


@pytest.fixture(scope="module")
def frames(sample, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("prepared")
    prepare(validate(sample, check_images=False), out, SplitParams())
    return load_prepared(out, "train"), load_prepared(out, "test")


@pytest.fixture(scope="module")
def model(frames):
    model = create("tfidf-linear", TINY)
    model.fit(frames[0].head(300))
    return model


def test_latency_has_both_batch_sizes_with_ordered_positive_numbers(model, frames):
    latency = measure_latency(model, frames[1], repeats={1: 12, 32: 4})
    assert set(latency) == {"batch_1", "batch_32"}
    for batch, calls in (("batch_1", 12), ("batch_32", 4)):
        numbers = latency[batch]
        assert set(numbers) == {"p50_ms", "p95_ms", "products_per_second", "calls"}
        assert 0 < numbers["p50_ms"] <= numbers["p95_ms"]
        assert numbers["products_per_second"] > 0
        assert numbers["calls"] == calls
    # 32 products per call cost more than one, but less than 32 single calls
    assert latency["batch_1"]["p50_ms"] < latency["batch_32"]["p50_ms"]
    assert latency["batch_32"]["products_per_second"] > latency["batch_1"]["products_per_second"]


def test_time_budget_stops_after_the_minimum_number_of_calls(model, frames):
    latency = measure_latency(model, frames[1], repeats={1: 40}, max_seconds=0.0)
    assert latency["batch_1"]["calls"] == MIN_CALLS


def test_empty_frame_and_bad_repeats_are_refused(model, frames):
    with pytest.raises(ValueError, match="at least one product"):
        measure_latency(model, frames[1].head(0))
    with pytest.raises(ValueError, match="must be positive"):
        measure_latency(model, frames[1], repeats={0: 3})


def test_batches_are_serving_frames_of_distinct_real_rows_while_rows_last(frames):
    test = frames[1].assign(text=frames[1].index)  # the row id as text: rows are traceable
    batches = _batches(test, 32, 5, seed=0)
    assert [len(b) for b in batches] == [32] * 5
    assert all(list(b.columns) == SERVING_COLUMNS for b in batches)
    drawn = [text for b in batches for text in b["text"]]
    assert len(set(drawn)) == 160 and set(drawn) <= set(test.index)
    assert {p != "" for b in batches for p in b["image_path"]} == {True, False}  # natural mix
    small = _batches(test.head(5), 4, 3, seed=0)  # 12 rows from 5: wraps around
    assert [len(b) for b in small] == [4, 4, 4]
    assert set(t for b in small for t in b["text"]) == set(test.index[:5])


def test_per_photo_caches_are_empty_and_private_during_the_measurement(tmp_path):
    from prodclass.models.feature_cache import FeatureCache

    shared = FeatureCache(tmp_path / "shared")
    holder = SimpleNamespace(cache=shared, ocr_cache_dir=None)
    with _cold_caches(holder):
        assert isinstance(holder.cache, FeatureCache) and holder.cache is not shared
        private = holder.cache.root.parent
        assert holder.ocr_cache_dir.parent == private
        assert not any(private.iterdir())
    assert holder.cache is shared and holder.ocr_cache_dir is None
    assert not private.exists()
    plain = SimpleNamespace()
    with _cold_caches(plain):  # a family without caches is left alone
        assert vars(plain) == {}


def test_flat_metric_names_for_mlflow():
    latency = {"batch_1": {"p50_ms": 1.5, "p95_ms": 2.0, "products_per_second": 600.0, "calls": 9}}
    assert latency_metrics(latency) == {
        "latency_batch_1_p50_ms": 1.5,
        "latency_batch_1_p95_ms": 2.0,
        "latency_batch_1_products_per_second": 600.0,
    }


def test_evaluation_report_carries_latency_only_when_asked_and_one_pass_of_scores(model, frames):
    test = frames[1]
    report, scores = evaluate_model(model, test, "tiny", latency=True)
    assert set(report["latency"]) == {"batch_1", "batch_32"}
    assert 0 <= report["ece"] <= 1
    assert all(0 <= m["ece"] <= 1 for m in report["by_modality"].values())
    assert scores.probabilities.shape == (len(test), len(model.classes_))
    assert np.array_equal(scores.predicted, model.predict(test))
    assert report["accuracy"] == round(float((scores.predicted == scores.labels).mean()), 4)
    without, _ = evaluate_model(model, test, "tiny")
    assert "latency" not in without
