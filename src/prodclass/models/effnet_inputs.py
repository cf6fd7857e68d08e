"""What the `multimodal-effnet` net reads about a product, and how a batch of it is assembled.

Computed once per fit or predict call (``NetInputs``): presence flags, the photo's trunk
activations, the hashed n-grams of its words and the stacked members' log-probabilities. Each
input exists in up to three variants: the full product, and what is left of it when modality
dropout hides its photo (with the words read on it) or its text; a training batch picks each
product's variant, an inference batch always reads the full one.

Training on a CPU stays fast because the frozen part of the image network runs once per photo
and view, and Tesseract once per photo (both cached on disk by content hash); each epoch only
runs the last image blocks, the text bag and the head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import torch

from prodclass.models.feature_cache import ActivationStore, FeatureCache, cache_activations
from prodclass.models.image_effnet import (
    EffNetConfig,
    EffNetTail,
    EffNetTrunk,
    load_pretrained_effnet,
)
from prodclass.models.multimodal import hide_one_modality
from prodclass.models.photo_features import pooled_features
from prodclass.models.text_hashed import HashedTextConfig, pack, text_to_ids

Variant = Literal["full", "text_only", "image_only"]
VARIANTS: tuple[Variant, ...] = ("full", "text_only", "image_only")


@dataclass
class NetInputs:
    """Everything the net reads about N products, computed once per fit or predict call."""

    has_text: np.ndarray  # (N,) bool: title or description given
    has_image: np.ndarray  # (N,) bool
    has_ocr: np.ndarray  # (N,) bool: words were read on the photo
    photo_index: np.ndarray  # (N,) row of each product in acts (-1: no photo)
    acts: ActivationStore | None  # (N_photo, V, C, h, w) trunk activations, on disk (None: no
    # photo); each batch reads its own rows, so memory does not grow with the catalogue
    ids: dict[str, list[list[int]]]  # variant -> per-product n-gram ids
    words: dict[str, list[str]]  # variant -> per-product words, what the TF-IDF member reads
    photo_features: np.ndarray | None = None  # (N_photo, V, D) frozen pooled features
    stacked: dict[str, np.ndarray] = field(default_factory=dict)  # variant -> (N, members * C)
    # member log-probabilities, side by side ({}: no stacked member)


class FrozenEffnet:
    """The pretrained network as the inputs are computed with it, each half loaded on first
    use: the trunk, whose activations the on-disk cache keeps, and the untouched tail, whose
    pooled features the photo member reads."""

    def __init__(self, config: EffNetConfig, device: torch.device) -> None:
        self.config = config
        self.device = device
        self._trunk: EffNetTrunk | None = None
        self._tail: EffNetTail | None = None

    def activations(
        self,
        paths: Sequence[str],
        cache: FeatureCache | None,
        views: Sequence[str],
        progress: bool = False,
    ) -> ActivationStore:
        """(N, V, C, h, w) trunk activations of ``paths`` under ``views``: computed into the
        cache (None: the one under settings.state_dir) where missing, read back on demand."""
        if self._trunk is None:
            # float32 on every device (no autocast): cached activations must not depend on
            # where they were computed beyond rounding
            net = load_pretrained_effnet(self.config.variant)
            self._trunk = EffNetTrunk(net, self.config).to(self.device)
        return cache_activations(
            paths, self._trunk, cache or FeatureCache.default(), self.config, views=views,
            progress=progress,
        )  # fmt: skip

    def photo_activations(
        self, image_paths: Sequence[str], cache: FeatureCache | None, views: Sequence[str]
    ) -> tuple[np.ndarray, ActivationStore | None]:
        """(N,) which products have a photo (a path), and the photos' activations in order
        (None: no photo, no network loaded)."""
        has_image = np.asarray([path != "" for path in image_paths], dtype=bool)
        if not has_image.any():
            return has_image, None
        paths = [path for path in image_paths if path != ""]
        return has_image, self.activations(paths, cache, views, progress=len(paths) > 64)

    def pooled(self, acts: ActivationStore | None, views: int) -> np.ndarray:
        """(N_photo, V, D) pooled features of the untouched pretrained network: what the photo
        member reads. Cheap: only the last blocks run, over cached trunk activations streamed
        from disk 128 photos at a time (D = 1280 floats per photo and view stay in memory)."""
        if acts is None or len(acts) == 0:  # no photo: nothing to run, no network to load
            return np.zeros((0, views, 0), np.float32)
        if self._tail is None:
            tail = EffNetTail(load_pretrained_effnet(self.config.variant), self.config)
            self._tail = tail.requires_grad_(False).eval().to(self.device)
        return pooled_features(self._tail, acts.chunks(128), views, self.device)


def read_products(
    products: pd.DataFrame,
    variants: tuple[Variant, ...],
    photos: tuple[np.ndarray, ActivationStore | None],
    ocr: list[str],
    text_config: HashedTextConfig | None,
) -> NetInputs:
    """What the net reads of ``products`` itself, in ``variants``: ``photos`` is which have a
    photo the model reads and their activations, ``ocr`` the words read on each photo; a
    model without a text branch (no ``text_config``) sees no text. The photo features and the
    stacked members' answers are the caller's to add: they depend on the members."""
    has_image, acts = photos
    words = variant_words(list(products["text"]), ocr)
    return NetInputs(
        has_text=(products["text"] != "").to_numpy() & (text_config is not None),
        has_image=has_image,
        has_ocr=np.asarray([bool(o) for o in ocr]),
        photo_index=np.where(has_image, np.cumsum(has_image) - 1, -1),
        acts=acts,
        ids={v: ngram_ids(words[v], text_config) for v in variants},
        words=words,
    )


def variant_words(text: list[str], ocr: list[str]) -> dict[str, list[str]]:
    """Each product's words per variant: title and description plus the words read on its
    photo; a hidden photo takes its words with it, hidden text leaves only the photo's."""
    return {
        "full": [f"{t} {o}".strip() for t, o in zip(text, ocr)],
        "text_only": text,
        "image_only": ocr,
    }


def ngram_ids(words: list[str], config: HashedTextConfig | None) -> list[list[int]]:
    """Hashed n-gram ids of each product's words (none without a text branch)."""
    if config is None:
        return [[] for _ in range(len(words))]
    return [text_to_ids(w, config) for w in words]


def net_batch(
    inp: NetInputs,
    rows: np.ndarray,
    modality_dropout: float = 0.0,
    view: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Network inputs of ``rows``; in training, ``view`` picks each photo's augmentation and
    ``rng`` drives modality dropout (at rate ``modality_dropout``)."""
    has_text, has_image, has_ocr = inp.has_text[rows], inp.has_image[rows], inp.has_ocr[rows]
    variant = np.zeros(len(rows), dtype=np.int64)  # index into VARIANTS: 0 = full
    if rng is not None and modality_dropout > 0:
        keep_text, keep_image = hide_one_modality(has_text, has_image, modality_dropout, rng)
        variant[~keep_image] = VARIANTS.index("text_only")
        variant[~keep_text] = VARIANTS.index("image_only")
        has_ocr = has_ocr & keep_image  # the words on a hidden photo are hidden with it
        has_text, has_image = keep_text, keep_image
    names = [VARIANTS[v] for v in variant]
    act_rows = inp.photo_index[rows][has_image]
    act_views = view[rows][has_image] if view is not None else np.zeros(len(act_rows), int)
    ids, offsets = pack([inp.ids[name][r] for name, r in zip(names, rows)])
    batch = {
        "text_ids": ids,
        "text_offsets": offsets,
        "image_act": torch.from_numpy(photo_acts(inp, act_rows, act_views)),
        "has_text": torch.from_numpy(has_text),
        "has_image": torch.from_numpy(has_image),
        "has_ocr": torch.from_numpy(has_ocr),
    }
    if inp.stacked:
        batch["stacked"] = torch.from_numpy(
            np.stack([inp.stacked[name][r] for name, r in zip(names, rows)])
        )
    return batch


def photo_acts(inp: NetInputs, rows: np.ndarray, views: np.ndarray) -> np.ndarray:
    """(b, C, h, w) float32 activations of a batch's photos, read from the cache now."""
    if inp.acts is None or len(rows) == 0:
        return np.zeros((0, 1, 1, 1), np.float32)
    return inp.acts.take(rows, views).astype(np.float32)
