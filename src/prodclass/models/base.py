"""The interface every model family implements, and the self-describing artifact format.

A model folder holds ``model.json`` (family, hyper-parameters, class order, versions) plus the
family's own files, so a model loads from its folder alone, whoever trained it.
"""

from __future__ import annotations

import json
import platform
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

import prodclass

if TYPE_CHECKING:  # torch stays unimported for the families that do not need it
    import torch

    from prodclass.models.feature_cache import ActivationStore

MODEL_CARD = "model.json"


class NoEmbeddingError(NotImplementedError):
    """The model family has no representation to compare products in."""


class NoSharedSpaceError(NoEmbeddingError):
    """The model's text and photo vectors cannot be compared: no search of photos by a phrase."""


class NoPhotoFeaturesError(NotImplementedError):
    """The model family reads no photo features through the feature cache."""


class FamilyParams(BaseModel):
    """Base of each family's hyper-parameters: unknown keys and wrong types are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ProductClassifier(ABC):
    """Predicts the 27-way prdtypecode distribution from a frame of products.

    Input frames carry ``text`` (already cleaned by ``prodclass.data.text.product_text``, may be
    empty) and ``image_path`` (may be empty); families use what they can.
    """

    family: ClassVar[str]
    Params: ClassVar[type[FamilyParams]]
    # True when ``embed`` puts texts and photos in one space (a text vector may be compared
    # with a photo vector: search photos by a phrase); False when each modality has its own
    shared_space: ClassVar[bool] = False

    def __init__(self, params: FamilyParams, classes: list[int] | None = None) -> None:
        self.params = params
        self.classes_: np.ndarray = np.asarray(classes or [], dtype=np.int64)
        # Called as (epoch, val_weighted_f1) after each epoch by families that train in epochs
        # (they pass it to train_epochs as on_epoch_end), to watch or stop a fit from outside;
        # it may raise to stop. Not a hyper-parameter, never saved.
        self.epoch_callback: Callable[[int, float], None] | None = None
        # Intra-op CPU threads for predictions. The API sets it (one per prediction worker
        # beats more on a small CPU); None means the family's training ``threads`` parameter.
        self.inference_threads: int | None = None
        # PRODCLASS_DEVICE value the PyTorch families train and predict on ("auto", "cpu",
        # "cuda"); None: the setting. Resolved once, on first use (``device``).
        self.device_setting: str | None = None
        self._device: torch.device | None = None

    @property
    def device(self) -> torch.device:
        """The torch device of this model (see ``prodclass.models.device``)."""
        if self._device is None:
            from prodclass.models.device import resolve_device

            self._device = resolve_device(self.device_setting)
        return self._device

    @property
    def predict_threads(self) -> int:
        return self.inference_threads or int(getattr(self.params, "threads", 1))

    @abstractmethod
    def fit(self, train: pd.DataFrame, val: pd.DataFrame | None = None) -> dict[str, Any]:
        """Fit on labelled products; return training facts worth logging."""

    @abstractmethod
    def predict_proba(self, products: pd.DataFrame) -> np.ndarray:
        """(N, n_classes) probabilities, columns in ``self.classes_`` order."""

    @abstractmethod
    def _save_files(self, path: Path) -> None: ...

    @abstractmethod
    def _load_files(self, path: Path) -> None: ...

    def embed(self, products: pd.DataFrame) -> dict[str, Any]:
        """The products in the model's own representation space, per modality: ``{"text": M,
        "image": M}`` with one row per product (a dense array or a scipy sparse matrix), zero
        for a product without that modality. Similarity search compares rows by cosine."""
        raise NoEmbeddingError(f"model family {self.family} has no embedding space")

    def shared_space_problem(self) -> str | None:
        """Why a phrase's vector cannot be compared with this model's photo vectors, or None
        when it can (``shared_space`` families refine it per model: an unaligned one cannot)."""
        if self.shared_space:
            return None
        return (
            f"model family {self.family} embeds texts and photos in separate spaces, so a "
            "phrase cannot be compared with photos; searching photos by text needs a model "
            "that aligns them in one space (clip-style)"
        )

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """(N, D) unit vectors of free phrases (cleaned like ``text``) in the space of the
        photo vectors of ``embed``: what text-to-photo search compares."""
        raise NoSharedSpaceError(self.shared_space_problem() or "no shared text-photo space")

    def cache_photo_features(self, paths: list[str]) -> ActivationStore:
        """Compute into the feature cache (``self.cache``, else the one under the settings'
        state folder) the frozen-trunk activations this configuration reads for ``paths``,
        under every view it trains on: a fit then finds them all cached. The partitioned
        photo assets of the pipeline call it per photo shard, so workers fill the cache the
        models read. Families that read no cached photo features refuse."""
        raise NoPhotoFeaturesError(
            f"model family {self.family} reads no cached photo features (late-fusion, "
            "multimodal-effnet and image-effnet do)"
        )

    def predict(self, products: pd.DataFrame) -> np.ndarray:
        return self.classes_[self.predict_proba(products).argmax(axis=1)]

    def save(self, path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        self._save_files(path)
        card = {
            "family": self.family,
            "params": self.params.model_dump(),
            "classes": [int(c) for c in self.classes_],
            "prodclass_version": prodclass.__version__,
            "python": platform.python_version(),
        }
        (path / MODEL_CARD).write_text(json.dumps(card, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: Path, device: str | None = None) -> ProductClassifier:
        """The model of folder ``path``; PyTorch families put their weights on ``device``
        (a PRODCLASS_DEVICE value; None: the setting), whatever device saved them."""
        card = json.loads((path / MODEL_CARD).read_text())
        model = cls(cls.Params(**card["params"]), classes=card["classes"])
        model.device_setting = device
        model._load_files(path)
        return model
