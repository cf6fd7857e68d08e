"""One way to time a block: the seconds it took, read after it ends (reports, MLflow)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class Elapsed:
    seconds: float = 0.0


@contextmanager
def stopwatch() -> Iterator[Elapsed]:
    """``with stopwatch() as took: ...`` then ``took.seconds`` (wall clock, set even when the
    block raises)."""
    took = Elapsed()
    start = time.perf_counter()
    try:
        yield took
    finally:
        took.seconds = time.perf_counter() - start
