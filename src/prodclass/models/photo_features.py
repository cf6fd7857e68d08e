"""Frozen pooled ImageNet features of a photo: what the photo members read.

The whole pretrained EfficientNet-Lite runs frozen; its trunk activations are cached on disk
by photo content, view and encoder (``feature_cache.py``), and only the 1x1 conv head and the
global average pool run over them on a cache hit, so a photo is paid for once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch

from prodclass.models.feature_cache import (
    ActivationStore,
    FeatureCache,
    cache_activations,
    trunk_activations,
)
from prodclass.models.image_effnet import EffNetConfig, EffNetTail, EffNetTrunk, build_effnet


def pooled_features(
    tail: EffNetTail,
    chunks: Iterable[np.ndarray],
    views: int,
    device: torch.device | None = None,
) -> np.ndarray:
    """(N, V, D) pooled features of trunk activations given as consecutive (n, V, C, h, w)
    chunks (an array's slices, or an ``ActivationStore`` streaming them from disk), through a
    frozen tail on ``device``; only one chunk is in memory at a time."""
    out = []
    with torch.inference_mode():
        for block in chunks:
            chunk = torch.from_numpy(block.astype(np.float32))
            n, v = chunk.shape[:2]
            pooled = tail(chunk.flatten(0, 1).to(device or "cpu"))  # (n * V, D)
            out.append(pooled.reshape(n, v, -1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, views, 0), np.float32)


def array_chunks(acts: np.ndarray, size: int = 128) -> Iterator[np.ndarray]:
    """Consecutive slices of ``size`` photos of an in-memory activation array."""
    for start in range(0, len(acts), size):
        yield acts[start : start + size]


class FrozenPhotoEncoder:
    """Pretrained ``variant``, split after its last block (nothing trainable): photos in,
    (N, V, D) pooled features out, trunk activations cached. Loads the network lazily."""

    def __init__(self, variant: str) -> None:
        self.config = EffNetConfig(variant, trainable_blocks=0)
        self._trunk: EffNetTrunk | None = None
        self._tail: EffNetTail | None = None

    def _parts(self) -> tuple[EffNetTrunk, EffNetTail]:
        if self._trunk is None or self._tail is None:
            trunk, tail = build_effnet(self.config)
            self._trunk, self._tail = trunk, tail.requires_grad_(False).eval()
        return self._trunk, self._tail

    @property
    def width(self) -> int:
        return self._parts()[1].out_dim

    def features(
        self, paths: Sequence[str], views: Sequence[str], cache: FeatureCache | None
    ) -> np.ndarray:
        """(len(paths), len(views), D) float32; a missing or undecodable photo raises
        ValueError naming it."""
        trunk, tail = self._parts()
        acts = trunk_activations(
            paths, trunk, cache, self.config, views=views, progress=len(paths) > 64
        )
        return pooled_features(tail, array_chunks(acts), len(views))

    def cache(
        self, paths: Sequence[str], views: Sequence[str], cache: FeatureCache
    ) -> ActivationStore:
        """Make sure ``cache`` holds the trunk activations ``features`` reads for ``paths``
        under ``views`` (the same keys: photo content, view, this encoder), computing only the
        missing ones; nothing is kept in memory."""
        trunk, _ = self._parts()
        return cache_activations(paths, trunk, cache, self.config, views=views, progress=False)
