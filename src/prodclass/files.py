"""Small file-system helpers shared by caches and checkpoints."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pandas as pd


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` through a temporary file in the same folder, then rename it into place.

    Readers never see a half-written file, concurrent writers never interleave, and an
    interrupted run leaves no partial file behind (the temporary is removed on any error).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# A cell starting with one of these is run as a formula by spreadsheet programs (CSV
# injection): "=HYPERLINK(...)" typed as a product title must stay text in an export.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe_csv(frame: pd.DataFrame) -> bytes:
    """The frame as CSV for people to open, text cells that would be formulas prefixed with
    an apostrophe (OWASP's advice); numbers are left alone."""

    def safe(value: object) -> object:
        if isinstance(value, str) and value.startswith(FORMULA_START):
            return "'" + value
        return value

    safe_frame = frame.map(safe)
    safe_frame.index = safe_frame.index.map(safe)
    return safe_frame.to_csv().encode()
