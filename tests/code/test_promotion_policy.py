"""The promotion rule: beat the champion's weighted F1 by the margin, and let no product type
fall by more than the tolerance."""

from prodclass.registry.model_registry import decide_promotion


def test_no_champion_promotes():
    assert decide_promotion(0.5, None, 0.0) == (True, "no champion yet")


def test_the_margin_must_be_beaten():
    promoted, reason = decide_promotion(0.70, 0.69, 0.02)
    assert not promoted and "does not beat" in reason
    assert decide_promotion(0.72, 0.69, 0.02)[0]


def test_a_class_that_falls_too_far_blocks_promotion():
    champion = {"10": 0.80, "2583": 0.90}
    better_everywhere = {"10": 0.82, "2583": 0.91}
    one_class_collapses = {"10": 0.50, "2583": 0.99}
    assert decide_promotion(0.80, 0.75, 0.0, better_everywhere, champion, 0.05)[0]
    promoted, reason = decide_promotion(0.80, 0.75, 0.0, one_class_collapses, champion, 0.05)
    assert not promoted and "class 10 loses 0.3000" in reason
    assert decide_promotion(0.80, 0.75, 0.0, one_class_collapses, champion, 0.5)[0]
