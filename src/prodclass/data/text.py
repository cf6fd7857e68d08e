"""Cleaning of French product text, shared by training and serving.

Merchant text arrives with HTML tags, (sometimes double-)escaped entities and stray whitespace;
one function turns it into what every text model sees, so training and serving cannot disagree.
"""

from __future__ import annotations

import html
import re
import unicodedata

_TAG = re.compile(r"<[^>]{0,2000}>")
_SPACE = re.compile(r"\s+")
# Letters glued by a removed tag or a missing space ("seyèsincolorecouverture") cannot be split
# reliably; char n-grams downstream make that cheap to live with.


def clean_text(text: object, lowercase: bool = True) -> str:
    """Unescape entities, drop tags, normalise Unicode and whitespace, optionally lowercase.

    Any non-string (None, NaN) becomes the empty string, never the text "nan".
    """
    if not isinstance(text, str) or not text:
        return ""
    out = text
    for _ in range(2):  # entities are sometimes escaped twice ("&amp;eacute;")
        unescaped = html.unescape(out)
        if unescaped == out:
            break
        out = unescaped
    out = _TAG.sub(" ", out)
    out = unicodedata.normalize("NFC", out)
    out = out.replace("\u00a0", " ")
    out = _SPACE.sub(" ", out).strip()
    return out.lower() if lowercase else out


def product_text(designation: object, description: object, lowercase: bool = True) -> str:
    """The single text a product is classified from: title then description."""
    parts = (clean_text(designation, lowercase), clean_text(description, lowercase))
    return " ".join(p for p in parts if p)
