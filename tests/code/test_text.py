import math

import pandas as pd
from tests.conftest import sample_dir

from prodclass.data.text import clean_text, product_text


def test_entities_tags_and_whitespace_are_cleaned():
    raw = "<p>Piscine &eacute;t&eacute;  <strong>hors-sol</strong></p>\n<li>4&#39;5&quot;</li>"
    assert clean_text(raw) == "piscine été hors-sol 4'5\""


def test_double_escaped_entities_are_unescaped():
    assert clean_text("caf&amp;eacute; cr&amp;egrave;me") == "café crème"


def test_missing_text_is_empty_never_nan():
    assert clean_text(None) == ""
    assert clean_text(math.nan) == ""
    assert product_text(math.nan, "") == ""


def test_casing_is_optional():
    assert clean_text("Lego Star WARS", lowercase=False) == "Lego Star WARS"
    assert clean_text("Lego Star WARS") == "lego star wars"


def test_real_descriptions_lose_all_markup():
    x = pd.read_csv(sample_dir() / "X_train_update.csv", index_col=0, keep_default_na=False)
    with_markup = x[x["description"].str.contains("<p>|&eacute;|&#39;", regex=True)].head(200)
    assert len(with_markup) > 50
    for _, row in with_markup.iterrows():
        text = product_text(row["designation"], row["description"])
        assert "<p>" not in text and "&eacute;" not in text and "&#39;" not in text
        assert "  " not in text
        assert text == text.strip()
