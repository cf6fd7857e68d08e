"""The Rakuten challenge's own folder layout, in one place.

A data folder holds ``X_train_update.csv`` (features, unnamed index column), ``Y_train_CVw08PX.csv``
(same index, ``prdtypecode``), ``X_test_update.csv`` and the photos under
``images/image_train/image_<imageid>_product_<productid>.jpg`` (``image_test`` for the test set).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

X_TRAIN = "X_train_update.csv"
Y_TRAIN = "Y_train_CVw08PX.csv"
X_TEST = "X_test_update.csv"
CATEGORY_NAMES = "category_names.csv"
IMAGE_DIRS = {"train": Path("images/image_train"), "test": Path("images/image_test")}

TEXT_COLUMNS = ("designation", "description")
ID_COLUMNS = ("productid", "imageid")
FEATURE_COLUMNS = (*TEXT_COLUMNS, *ID_COLUMNS)
LABEL_COLUMN = "prdtypecode"


def image_name(imageid: object, productid: object) -> str:
    """File name of a product photo, as the challenge names it."""
    return f"image_{imageid}_product_{productid}.jpg"


@dataclass(frozen=True)
class ChallengeLayout:
    """Paths of one data folder in the challenge layout."""

    root: Path

    @property
    def x_train(self) -> Path:
        return self.root / X_TRAIN

    @property
    def y_train(self) -> Path:
        return self.root / Y_TRAIN

    @property
    def x_test(self) -> Path:
        return self.root / X_TEST

    def image_dir(self, subset: str = "train") -> Path:
        return self.root / IMAGE_DIRS[subset]

    def image_path(self, imageid: object, productid: object, subset: str = "train") -> Path:
        return self.image_dir(subset) / image_name(imageid, productid)


def read_challenge_csv(source: Path | bytes) -> pd.DataFrame:
    """A CSV in the challenge layout (a path or its bytes), every field a string, missing text
    an empty string, the first column the row id.

    pandas' fast reader ends a field at a NUL character without a word; a file holding one is
    read by the Python reader, which keeps it, so that validation names the row
    (``nul_fields``) instead of using a cut text, id or label.
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    engine = "python" if b"\x00" in data else "c"
    frame = pd.read_csv(
        io.BytesIO(data), index_col=0, dtype=str, keep_default_na=False, engine=engine
    )
    frame.index = frame.index.astype(str)
    frame.index.name = "row_id"
    return frame


def nul_fields(frame: pd.DataFrame) -> list[tuple[str, str, int]]:
    """(row id, column, character position) of every field holding a NUL, the row id too."""
    found = [(row_id, "row id", row_id.index("\x00")) for row_id in frame.index if "\x00" in row_id]
    for column in frame.columns:
        values = frame[column].astype(str)
        for row_id, value in values[values.str.contains("\x00", regex=False)].items():
            found.append((row_id, str(column), value.index("\x00")))
    return found


def read_features(path: Path) -> pd.DataFrame:
    """Read an X_*.csv keeping ids as strings and missing text as empty strings.

    Ids stay strings so that a malformed id is reported by validation instead of being coerced.
    """
    return read_challenge_csv(path)


def read_labels(path: Path) -> pd.DataFrame:
    """Read Y_train_*.csv as strings; label parsing and checks happen in validation."""
    return read_challenge_csv(path)
