"""The promotion rule: the paired CV difference's interval must clear the margin, and no
product type may fall by more than the tolerance; checked on real cross-validated models."""

from pathlib import Path

import pandas as pd
import pytest

from prodclass.data.prepare import load_prepared
from prodclass.registry.model_registry import decide_promotion
from prodclass.training.cv import cross_validate, paired_difference, per_class_changes

FAST = {"char_ngram_max": 3, "max_features_char": 20_000, "calibration_folds": 2}


def test_no_champion_promotes():
    promoted, reason = decide_promotion(None, 0.0)
    assert promoted and "no champion" in reason


def test_the_lower_bound_must_clear_the_margin():
    assert not decide_promotion((0.02, -0.01, 0.05), 0.0)[0]  # a gain, but within noise
    assert decide_promotion((0.04, 0.01, 0.07), 0.0)[0]
    promoted, reason = decide_promotion((0.04, 0.01, 0.07), 0.02)
    assert not promoted and "lower bound is not above 0.02" in reason


def test_a_class_that_falls_too_far_blocks_promotion():
    clear_gain = (0.05, 0.02, 0.08)
    assert decide_promotion(clear_gain, 0.0, {"10": 0.02, "2583": 0.01}, 0.05)[0]
    promoted, reason = decide_promotion(clear_gain, 0.0, {"10": -0.3, "2583": 0.09}, 0.05)
    assert not promoted and "class 10 loses 0.3000" in reason
    assert decide_promotion(clear_gain, 0.0, {"10": -0.3, "2583": 0.09}, 0.5)[0]


@pytest.fixture(scope="module")
def products(six_codes_prepared: Path) -> pd.DataFrame:
    return load_prepared(six_codes_prepared)


def _decide(candidate, champion) -> tuple[bool, str]:
    d = paired_difference(candidate, champion, "champion", subsets=("all",))["all"].weighted_f1
    changes = {c: r["f1_change"] for c, r in per_class_changes(candidate, champion).items()}
    return decide_promotion((d.mean, d.low, d.high), 0.0, changes, 1.0)


def test_a_challenger_equal_within_noise_is_not_promoted(products):
    champion = cross_validate(products, "tfidf-linear", FAST | {"seed": 1})
    challenger = cross_validate(products, "tfidf-linear", FAST | {"seed": 2, "C": 0.45})
    promoted, reason = _decide(challenger, champion)
    assert not promoted, reason


def test_a_clearly_better_challenger_is_promoted(products):
    crippled = cross_validate(products, "tfidf-linear", FAST | {"C": 0.0005, "class_weight": None})
    good = cross_validate(products, "tfidf-linear", FAST)
    promoted, reason = _decide(good, crippled)
    assert promoted, reason
    assert not _decide(crippled, good)[0]
