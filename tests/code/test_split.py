import pandas as pd
import pytest

from prodclass.data.split import stratified_split


def _products(n_per_class: int = 40) -> pd.DataFrame:
    rows = []
    for label in (10, 40, 2583):
        for modality in ("text_only", "image_only"):
            rows += [(f"{label}-{modality}-{i}", label, modality) for i in range(n_per_class)]
    return pd.DataFrame(rows, columns=["row_id", "label", "modality"]).set_index("row_id")


def test_split_is_deterministic_and_ignores_row_order():
    products = _products()
    first = stratified_split(products, 0.15, 0.15, seed=7)
    shuffled = stratified_split(products.sample(frac=1, random_state=1), 0.15, 0.15, seed=7)
    assert first.equals(shuffled.loc[first.index])


def test_split_is_stratified_with_requested_sizes():
    products = _products()
    split = stratified_split(products, 0.15, 0.15, seed=7)
    counts = split.value_counts()
    assert counts["test"] == pytest.approx(0.15 * len(products), abs=1)
    assert counts["val"] == pytest.approx(0.15 * len(products), abs=1)
    per_stratum = products.assign(split=split).groupby(["label", "modality"])["split"]
    for _, values in per_stratum:
        assert (values == "test").sum() in (5, 6, 7)


def test_other_seed_gives_other_split():
    products = _products()
    assert not stratified_split(products, 0.15, 0.15, 1).equals(
        stratified_split(products, 0.15, 0.15, 2)
    )


def test_existing_products_keep_their_split_when_data_grows():
    products = _products(40)
    grown = _products(44)
    before = stratified_split(products, 0.15, 0.15, 3)
    after = stratified_split(grown, 0.15, 0.15, 3).loc[before.index]
    assert (before == after).mean() > 0.9


@pytest.mark.parametrize("val,test", [(0, 0.1), (0.5, 0.5), (0.2, 1.2)])
def test_bad_sizes_are_refused(val, test):
    with pytest.raises(ValueError):
        stratified_split(_products(), val, test, 1)
