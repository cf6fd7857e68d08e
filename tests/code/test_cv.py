"""The cross-validation protocol on real products (six product types, 240 rows)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prodclass.data.prepare import load_prepared
from prodclass.data.split import hash_folds, product_keys
from prodclass.training.cv import (
    SUBSETS,
    CVResult,
    cross_validate,
    paired_difference,
    per_class_changes,
    score,
)
from prodclass.training.metrics import classification_metrics, f1_from_confusions

# small enough to fit five times in seconds
FAST_TFIDF = {"char_ngram_max": 3, "max_features_char": 20_000, "calibration_folds": 2}


@pytest.fixture(scope="module")
def products(six_codes_prepared: Path) -> pd.DataFrame:
    return load_prepared(six_codes_prepared)


@pytest.fixture(scope="module")
def result(products: pd.DataFrame) -> CVResult:
    return cross_validate(products, "tfidf-linear", FAST_TFIDF, folds=5, seed=42)


def test_every_product_is_predicted_once_by_a_model_that_never_saw_it(products, result):
    assert list(result.row_ids) == list(products.index)
    assert np.array_equal(result.fold_of, hash_folds(product_keys(products), 5, 42))
    assert np.allclose(result.probabilities.sum(axis=1), 1.0)
    assert sum(f.n_predicted for f in result.fold_facts) == len(products)
    for facts in result.fold_facts:  # trained on the other folds only
        assert facts.n_train == len(products) - facts.n_predicted
        assert facts.best_epoch is None and facts.fit_seconds > 0
    assert result.temperature is None  # tfidf-linear has no logits
    assert 0 <= result.ece <= 1


def test_scores_have_intervals_around_the_estimate_and_per_class_detail(result):
    scores = score(result)
    assert set(scores) <= set(SUBSETS) and "all" in scores
    for subset in scores.values():
        assert subset.weighted_f1.contains(subset.weighted_f1.mean)
        assert subset.macro_f1.contains(subset.macro_f1.mean)
        assert subset.weighted_f1.high > subset.weighted_f1.low
    overall = scores["all"]
    assert overall.n == len(result.labels)
    assert overall.weighted_f1.mean > 0.5  # six product types; chance is about 0.17
    assert set(overall.per_class) == {str(c) for c in result.classes}
    assert all("recall" in row for row in overall.per_class.values())
    fold_mean, fold_sd = overall.fold_weighted_f1
    assert abs(fold_mean - overall.weighted_f1.mean) < 0.1 and fold_sd >= 0


def test_identical_candidates_differ_by_exactly_zero(result):
    again = score(result)  # seeded: the same resamples give the same interval
    assert again["all"] == score(result)["all"]
    difference = paired_difference(result, result, "itself")
    for subset in difference.values():
        assert subset.weighted_f1.mean == 0 and subset.weighted_f1.contains(0.0)
        assert subset.weighted_f1.low == subset.weighted_f1.high == 0


def test_saved_result_compares_without_refitting(result, tmp_path):
    loaded = CVResult.load(result.save(tmp_path / "cv"))
    assert list(loaded.row_ids) == list(result.row_ids)
    assert np.array_equal(loaded.predicted, result.predicted)
    assert loaded.fold_facts == result.fold_facts
    assert paired_difference(loaded, result, "saved")["all"].weighted_f1.mean == 0
    changes = per_class_changes(loaded, result)
    assert all(row["f1_change"] == 0 for row in changes.values())


def test_a_weaker_candidate_shows_a_negative_difference(products, result):
    crippled = cross_validate(
        products, "tfidf-linear", FAST_TFIDF | {"C": 0.0005, "class_weight": None}, folds=5
    )
    difference = paired_difference(crippled, result, "tfidf-linear")["all"]
    assert difference.weighted_f1.high < 0
    assert difference.n == len(products)


def test_old_products_keep_their_fold_when_products_are_added(products):
    fewer = products.iloc[:200]
    smaller = cross_validate(fewer, "tfidf-linear", FAST_TFIDF, folds=5)
    larger = pd.Series(hash_folds(product_keys(products), 5, 42), index=products.index)
    assert np.array_equal(smaller.fold_of, larger.loc[fewer.index].to_numpy())


def test_too_few_products_for_the_folds_are_refused(products):
    with pytest.raises(ValueError, match="too few"):
        cross_validate(products.iloc[:3], "tfidf-linear", FAST_TFIDF, folds=5)


def test_f1_from_confusions_matches_the_metrics_module():
    rng = np.random.default_rng(0)
    classes = np.array([10, 40, 50, 2583])
    y_true = rng.choice(classes[:3], 300)  # one class never true, sometimes predicted
    y_pred = np.where(rng.random(300) < 0.6, y_true, rng.choice(classes, 300))
    index = {c: i for i, c in enumerate(classes)}
    confusion = np.zeros((1, 4, 4))
    for t, p in zip(y_true, y_pred):
        confusion[0, index[t], index[p]] += 1
    weighted, macro = f1_from_confusions(confusion)
    expected = classification_metrics(y_true, y_pred)
    assert weighted[0] == pytest.approx(expected["weighted_f1"], abs=1e-4)
    assert macro[0] == pytest.approx(expected["macro_f1"], abs=1e-4)


def test_a_refitted_model_predicts_the_products_it_never_saw(products):
    from prodclass.models.registry import create
    from prodclass.training.cv import with_unseen_predictions

    known = products.iloc[:200]
    champion_cv = cross_validate(known, "tfidf-linear", FAST_TFIDF, folds=5)
    champion = create("tfidf-linear", FAST_TFIDF)
    champion.fit(known)
    extended = with_unseen_predictions(champion_cv, champion, products)
    assert list(extended.row_ids) == list(products.index)
    assert (extended.fold_of[200:] == -1).all() and (extended.fold_of[:200] >= 0).all()
    assert np.array_equal(extended.predicted[200:], champion.predict(products.iloc[200:]))
    assert np.array_equal(extended.predicted[:200], champion_cv.predicted)
    challenger = cross_validate(products, "tfidf-linear", FAST_TFIDF, folds=5)
    assert paired_difference(challenger, extended, "champion")["all"].n == len(products)
    assert with_unseen_predictions(extended, champion, products) is extended  # nothing new
