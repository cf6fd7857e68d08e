"""Safe image decoding, shared by validation, training and serving."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

# Far above a 500x500 catalogue photo, far below a decompression bomb.
MAX_PIXELS = 40_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class ImageError(ValueError):
    """The bytes are not a usable image; the message says why."""


def open_image(source: Path | bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode fully into RGB, refusing non-images, truncated files and oversized images."""
    try:
        stream = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
    except OSError as exc:
        raise ImageError(f"cannot read image file: {exc.strerror}") from exc
    with stream:
        try:
            image = Image.open(stream)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(f"image too large: {width}x{height} pixels (limit {max_pixels})")
            image.load()  # raises on truncated data, unlike Image.open
            return image.convert("RGB")
        except ImageError:
            raise
        except UnidentifiedImageError as exc:
            raise ImageError("not an image") from exc
        except Image.DecompressionBombError as exc:
            raise ImageError(f"image too large: {exc}") from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(f"corrupt image: {exc}") from exc


def check_image(path: Path) -> str | None:
    """None if the file decodes completely, else the reason it does not.

    JPEG draft mode decodes at 1/8 scale: every byte is still read (truncation is caught) at a
    fraction of the cost, which matters for the 85k-photo full data set.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                return f"image too large: {width}x{height} pixels"
            if image.format == "JPEG":
                image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            image.load()
    except UnidentifiedImageError:
        return "not an image"
    except Image.DecompressionBombError as exc:
        return f"image too large: {exc}"
    except (OSError, SyntaxError, ValueError) as exc:
        return f"corrupt image: {exc}"
    return None
