"""Turning raw product fields (as clients send them) into the frame models read."""

from __future__ import annotations

import pandas as pd

from prodclass.data.text import product_text


def products_from_fields(raw: pd.DataFrame) -> pd.DataFrame:
    """Frame with ``text`` and ``image_path`` from designation/description/image columns.

    Missing columns are treated as empty, so text-only and image-only inputs both work.
    """
    n = len(raw)
    designation = raw["designation"] if "designation" in raw else [""] * n
    description = raw["description"] if "description" in raw else [""] * n
    images = raw["image"] if "image" in raw else [""] * n
    return pd.DataFrame(
        {
            "text": [product_text(d, s) for d, s in zip(designation, description)],
            "image_path": ["" if not isinstance(i, str) else i for i in images],
        },
        index=raw.index,
    )
