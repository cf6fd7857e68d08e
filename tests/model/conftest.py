"""Fixtures shared by the model tests: one CPU thread, a private state folder, and a small real
prepared subset of the sample with six product types that look and read differently."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch

from prodclass.data.prepare import load_prepared
from prodclass.settings import get_settings

# the shared checks assert like test modules do (values shown on failure)
pytest.register_assert_rewrite("tests.model.multimodal_checks")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One CPU thread per test module: the machine (2 cores) is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", autouse=True)
def state_dir(tmp_path_factory) -> Iterator[Path]:
    """Caches and checkpoints go to a fresh state folder, never the project's."""
    state = tmp_path_factory.mktemp("state")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRODCLASS_STATE_DIR", str(state))
        get_settings.cache_clear()
        yield state
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def six_codes_splits(six_codes_prepared: Path) -> dict[str, pd.DataFrame]:
    return {s: load_prepared(six_codes_prepared, s) for s in ("train", "val", "test")}


# The multimodal families' tests train on the six-code subset; modules with data of their own
# (text families, TF-IDF) define their own ``prepared`` / ``splits``.
@pytest.fixture(scope="module")
def prepared(six_codes_prepared: Path) -> Path:
    return six_codes_prepared


@pytest.fixture(scope="module")
def splits(six_codes_splits: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    return six_codes_splits
