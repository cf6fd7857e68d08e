import numpy as np
import pandas as pd
import pytest

from prodclass.data.split import hash_folds, hashed_split


def _products(n_per_class: int = 40) -> pd.DataFrame:
    rows = []
    for label in (10, 40, 2583):
        for modality in ("text_only", "image_only"):
            rows += [(f"{label}-{modality}-{i}", label, modality) for i in range(n_per_class)]
    return pd.DataFrame(rows, columns=["row_id", "label", "modality"]).set_index("row_id")


def test_split_is_deterministic_and_ignores_row_order():
    products = _products()
    first = hashed_split(products, 0.15, 0.15, seed=7)
    shuffled = hashed_split(products.sample(frac=1, random_state=1), 0.15, 0.15, seed=7)
    assert first.equals(shuffled.loc[first.index])


def test_split_sizes_follow_the_fractions_in_expectation():
    # 6,000 products: a bucket of 15 % holds 900 +- 28 (one sd), so +-100 is > 3.5 sd
    products = _products(1000)
    split = hashed_split(products, 0.15, 0.15, seed=7)
    counts = split.value_counts()
    assert abs(counts["test"] - 900) < 100
    assert abs(counts["val"] - 900) < 100
    per_stratum = products.assign(split=split).groupby(["label", "modality"])["split"]
    for _, values in per_stratum:  # 1,000 per stratum: 150 +- 11 each
        assert 110 < (values == "test").sum() < 190


def test_other_seed_gives_other_split():
    products = _products()
    assert not hashed_split(products, 0.15, 0.15, 1).equals(hashed_split(products, 0.15, 0.15, 2))


def test_existing_products_never_move_when_data_grows():
    products = _products(40)
    grown = _products(44)
    before = hashed_split(products, 0.15, 0.15, 3)
    after = hashed_split(grown, 0.15, 0.15, 3).loc[before.index]
    assert before.equals(after)
    folds_before = hash_folds(products.index, 5, 3)
    folds_after = pd.Series(hash_folds(grown.index, 5, 3), index=grown.index)
    assert np.array_equal(folds_before, folds_after.loc[products.index].to_numpy())


def test_folds_cover_every_product_about_evenly():
    products = _products(200)  # 1,200 products: 240 +- 14 per fold
    folds = hash_folds(products.index, 5, 42)
    counts = np.bincount(folds, minlength=5)
    assert counts.sum() == len(products)
    assert counts.min() > 190 and counts.max() < 290


def test_fewer_than_two_folds_are_refused():
    with pytest.raises(ValueError):
        hash_folds(["a", "b"], 1, 0)


@pytest.mark.parametrize("val,test", [(0, 0.1), (0.5, 0.5), (0.2, 1.2)])
def test_bad_sizes_are_refused(val, test):
    with pytest.raises(ValueError):
        hashed_split(_products(), val, test, 1)
