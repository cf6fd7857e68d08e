"""The data folder's unlabelled products (``X_test_update.csv`` and ``images/image_test``), in
the frame models read: what semi-supervised training may pseudo-label."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from prodclass.data.layout import ChallengeLayout, read_features
from prodclass.data.text import product_text


def unlabelled_products(data_dir: Path) -> pd.DataFrame:
    """``text`` and ``image_path`` ('' when the photo is absent) of every unlabelled product
    that has at least one of them; a clear error when the file is missing."""
    layout = ChallengeLayout(Path(data_dir))
    if not layout.x_test.is_file():
        raise FileNotFoundError(f"no unlabelled products: {layout.x_test} does not exist")
    raw = read_features(layout.x_test)
    missing = {"designation", "description", "productid", "imageid"} - set(raw.columns)
    if missing:
        raise ValueError(f"{layout.x_test.name} lacks the column(s) {', '.join(sorted(missing))}")
    photos = [layout.image_path(i, p, "test") for i, p in zip(raw["imageid"], raw["productid"])]
    frame = pd.DataFrame(
        {
            "text": [product_text(d, s) for d, s in zip(raw["designation"], raw["description"])],
            "image_path": [str(p) if p.is_file() else "" for p in photos],
        },
        index=[f"unlabelled-{i}" for i in raw.index],
    )
    return frame[(frame["text"] != "") | (frame["image_path"] != "")]
