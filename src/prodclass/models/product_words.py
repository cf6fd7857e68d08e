"""The words a model reads for a product: its title and description, plus the words Tesseract
reads on its photo when the model asks for them (cached on disk by photo content)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def ocr_words(image_paths: Sequence[str], cache_dir: Path | None = None) -> list[str]:
    """Words printed on each photo ('' for an empty path); Tesseract runs only on photos not
    in the cache (``cache_dir``, default ``state_dir/ocr-cache``; capped by the settings)."""
    if not any(image_paths):
        return [""] * len(image_paths)
    from prodclass.cache_budget import megabytes
    from prodclass.data.ocr import read_photos
    from prodclass.settings import get_settings

    settings = get_settings()
    return read_photos(
        list(image_paths),
        cache_dir or settings.state_dir / "ocr-cache",
        workers=settings.ocr_workers,
        max_bytes=megabytes(settings.ocr_cache_max_mb),
    )
