"""What drift is measured on: simple, explainable features of each product as the model sees
it (text length and make-up, which inputs it has, photo size, brightness and colour)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image, ImageStat

NUMERIC = (
    "text_chars",
    "text_words",
    "digit_share",
    "upper_share",
    "accent_share",  # French accented letters per letter: a language/vocabulary proxy
    "image_width",
    "image_height",
    "image_brightness",
    "image_saturation",
    "image_red",
    "image_green",
    "image_blue",
)
CATEGORICAL = ("inputs",)  # text, image, text+image
ACCENTS = set("àâäéèêëîïôöùûüÿçœæ")


def _text_features(text: str) -> dict[str, float]:
    letters = [c for c in text if c.isalpha()]
    n = max(1, len(letters))
    return {
        "text_chars": float(len(text)),
        "text_words": float(len(text.split())),
        "digit_share": sum(c.isdigit() for c in text) / max(1, len(text)),
        "upper_share": sum(c.isupper() for c in letters) / n,
        "accent_share": sum(c.lower() in ACCENTS for c in letters) / n,
    }


def _image_features(path: str) -> dict[str, float]:
    """Size and colour statistics, read from a reduced decode (JPEG draft mode) to stay cheap."""
    with Image.open(path) as image:
        width, height = image.size
        image.draft("RGB", (max(1, width // 4), max(1, height // 4)))
        rgb = image.convert("RGB")
        red, green, blue = ImageStat.Stat(rgb).mean
        hsv = ImageStat.Stat(rgb.convert("HSV")).mean
    return {
        "image_width": float(width),
        "image_height": float(height),
        "image_brightness": float(hsv[2]),
        "image_saturation": float(hsv[1]),
        "image_red": float(red),
        "image_green": float(green),
        "image_blue": float(blue),
    }


def product_features(products: pd.DataFrame) -> pd.DataFrame:
    """One row of features per product (frame with ``text`` and ``image_path``); a feature of a
    missing input is NaN (tests compare only the products that have it)."""
    rows = []
    for text, path in zip(products["text"].fillna(""), products["image_path"].fillna("")):
        row: dict[str, float | str] = dict.fromkeys(NUMERIC, np.nan)
        if text:
            row.update(_text_features(text))
        if path:
            try:
                row.update(_image_features(path))
            except OSError:
                path = ""  # unreadable: counted as no photo
        row["inputs"] = "+".join(k for k, v in (("text", text), ("image", path)) if v) or "none"
        rows.append(row)
    return pd.DataFrame(rows, index=products.index)
