"""Factory of model families: a name in params.yaml picks the class.

Families are imported lazily so that, for example, the TF-IDF model never imports torch.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from prodclass.models.base import MODEL_CARD, ProductClassifier

# family name -> "module:Class"
FAMILIES: dict[str, str] = {
    "tfidf-linear": "prodclass.models.tfidf_linear:TfidfLinearClassifier",
    "image-effnet": "prodclass.models.multimodal_effnet:ImageEffnetClassifier",
    "late-fusion": "prodclass.models.late_fusion:LateFusionClassifier",
    "multimodal-effnet": "prodclass.models.multimodal_effnet:MultimodalEffnetClassifier",
    "multimodal-clip": "prodclass.models.multimodal_clip:MultimodalClipClassifier",
    "clip-style": "prodclass.models.clip_style:ClipStyleClassifier",
    "text-lstm": "prodclass.models.text_lstm:TextLstmClassifier",
    "text-transformer": "prodclass.models.text_transformer:TextTransformerClassifier",
}


class UnknownFamilyError(ValueError):
    pass


def family_class(name: str) -> type[ProductClassifier]:
    try:
        target = FAMILIES[name]
    except KeyError:
        known = ", ".join(sorted(FAMILIES))
        raise UnknownFamilyError(f"unknown model family {name!r}; known: {known}") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def create(name: str, params: dict[str, Any] | None = None) -> ProductClassifier:
    """A new, untrained model of family ``name``; params are validated by the family."""
    cls = family_class(name)
    return cls(cls.Params(**(params or {})))


def load_model_dir(path: Path, device: str | None = None) -> ProductClassifier:
    """Load a saved model folder, whatever its family, onto ``device`` (a PRODCLASS_DEVICE
    value; None: the setting)."""
    card_path = Path(path) / MODEL_CARD
    if not card_path.is_file():
        raise FileNotFoundError(f"{path} is not a prodclass model folder (no {MODEL_CARD})")
    family = json.loads(card_path.read_text())["family"]
    return family_class(family).load(Path(path), device=device)
