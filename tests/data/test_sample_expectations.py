"""Expectations on the real sample (Made-With-ML's data tests): what the code relies on."""

import re

import pandas as pd

from prodclass.data import taxonomy
from prodclass.data.validate import validate


def test_taxonomy_matches_the_shipped_category_names(sample):
    names = pd.read_csv(sample / "category_names.csv")
    assert list(names["prdtypecode"]) == list(taxonomy.CODES)
    for row in names.itertuples():
        assert taxonomy.name(row.prdtypecode, "fr") == row.name_fr
        assert taxonomy.name(row.prdtypecode, "en") == row.name_en


def documented_counts(sample) -> dict[str, int]:
    """The row counts the sample's own README states (it grows; the test follows it)."""
    readme = (sample / "README.md").read_text()

    def number(pattern: str) -> int:
        match = re.search(pattern, readme)
        assert match, f"the sample README no longer says {pattern!r}"
        return int(match.group(1).replace(",", ""))

    return {
        "rows": number(r"([\d,]+) labelled rows"),
        "both": number(r"([\d,]+) with title/description AND image"),
        "text_only": number(r"([\d,]+) with text but no image"),
        "image_only": number(r"([\d,]+) with an image but empty"),
    }


def test_sample_validates_with_its_documented_modalities(sample):
    counts = documented_counts(sample)
    result = validate(sample)
    report = result.report
    assert report.fatal == []
    assert report.n_rows == counts["rows"]
    assert report.n_rejected == 0
    assert report.modalities == {
        "both": counts["both"],
        "text_only": counts["text_only"],
        "image_only": counts["image_only"],
    }
    assert report.issue_counts == {"image_missing": counts["text_only"]}
    assert set(result.products["label"].astype(int)) == set(taxonomy.CODES)


def test_test_set_validates_without_labels(sample):
    result = validate(sample, subset="test")
    assert result.report.n_rows == 490
    assert result.report.modalities == {"both": 490}
    assert result.products["label"].isna().all()
