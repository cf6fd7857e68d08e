"""The stopwatch reports the block's wall-clock time, also when the block raises."""

from __future__ import annotations

import time

import pytest

from prodclass.timing import stopwatch


def test_stopwatch_measures_the_block() -> None:
    with stopwatch() as took:
        assert took.seconds == 0.0  # read only after the block
        time.sleep(0.05)
    assert 0.05 <= took.seconds < 1.0


def test_stopwatch_is_set_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError), stopwatch() as took:
        time.sleep(0.02)
        raise RuntimeError("failed fit")
    assert took.seconds >= 0.02
