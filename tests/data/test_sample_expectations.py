"""Expectations on the real sample (Made-With-ML's data tests): what the code relies on."""

import pandas as pd

from prodclass.data import taxonomy
from prodclass.data.validate import validate


def test_taxonomy_matches_the_shipped_category_names(sample):
    names = pd.read_csv(sample / "category_names.csv")
    assert list(names["prdtypecode"]) == list(taxonomy.CODES)
    for row in names.itertuples():
        assert taxonomy.name(row.prdtypecode, "fr") == row.name_fr
        assert taxonomy.name(row.prdtypecode, "en") == row.name_en


def test_sample_validates_with_its_documented_modalities(sample):
    result = validate(sample)
    report = result.report
    assert report.fatal == []
    assert report.n_rows == 3170
    assert report.n_rejected == 0
    assert report.modalities == {"both": 651, "text_only": 1438, "image_only": 1081}
    assert report.issue_counts == {"image_missing": 1438}
    assert set(result.products["label"].astype(int)) == set(taxonomy.CODES)


def test_test_set_validates_without_labels(sample):
    result = validate(sample, subset="test")
    assert result.report.n_rows == 490
    assert result.report.modalities == {"both": 490}
    assert result.products["label"].isna().all()
