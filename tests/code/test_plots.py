"""Reliability diagram and calibration error: pure functions on constructed probabilities."""

import numpy as np
import pytest

from prodclass.models.calibration import expected_calibration_error
from prodclass.training.metrics import calibration_error, target_index
from prodclass.training.plots import reliability_bins, reliability_diagram_png

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _calibrated(levels=(0.4, 0.6, 0.8, 1.0), per_level=50):
    """3-class probabilities whose top confidence c is right in exactly c of the rows."""
    probabilities, targets = [], []
    for c in levels:
        rest = (1 - c) / 2
        n_right = round(c * per_level)
        for i in range(per_level):
            probabilities.append([c, rest, rest])
            targets.append(0 if i < n_right else 1)
    return np.asarray(probabilities), np.asarray(targets)


def test_perfectly_calibrated_scores_have_zero_ece_and_bins_on_the_diagonal():
    probabilities, targets = _calibrated()
    assert expected_calibration_error(probabilities, targets) == pytest.approx(0, abs=1e-9)
    edges, confidence, accuracy, counts = reliability_bins(probabilities, targets)
    assert len(edges) == 16 and counts.sum() == len(targets)
    filled = counts > 0
    assert filled.sum() == 4
    assert np.allclose(confidence[filled], accuracy[filled])
    assert np.isnan(accuracy[~filled]).all()


def test_overconfidence_shows_as_a_large_ece():
    probabilities = np.tile([0.98, 0.01, 0.01], (100, 1))
    targets = np.asarray([0] * 50 + [2] * 50)  # 98% confident, half right
    assert expected_calibration_error(probabilities, targets) == pytest.approx(0.48)


def test_reliability_diagram_is_a_png(tmp_path):
    probabilities, targets = _calibrated()
    targets[:30] = 2  # some miscalibration to draw
    path = reliability_diagram_png(probabilities, targets, tmp_path / "r" / "rel.png", "t")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > 10_000


def test_labels_the_model_does_not_know_count_as_errors():
    classes = np.asarray([10, 40, 50])
    assert target_index(classes, np.asarray([50, 10, 2583])).tolist() == [2, 0, -1]
    probabilities = np.tile([0.1, 0.1, 0.8], (4, 1))
    known = calibration_error(probabilities, classes, np.asarray([50, 50, 50, 50]))
    unknown = calibration_error(probabilities, classes, np.asarray([50, 50, 2583, 2583]))
    assert known == pytest.approx(0.2)  # always right at 0.8 confidence
    assert unknown == pytest.approx(0.3)  # right half the time at 0.8 confidence
    assert 0 <= unknown <= 1
