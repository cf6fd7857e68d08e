"""The two tower pairs of the `clip-style` family, behind one small interface.

- ``PackagedTowers``: what ships with prodclass. Photo: the EfficientNet-Lite trunk (frozen,
  its activations cached on disk by photo hash) then its last ``image_trainable_blocks`` blocks
  and conv head (frozen pooled features when 0), then a projection. Words: a hashed word,
  word-bigram and character n-gram bag (fastText-style, trained here), then a projection.
- ``ClipTowers``: a real CLIP-style dual encoder from a local folder (the `multimodal-clip`
  family's loader and layer freezing): its own projections already share one space, its own
  logit scale is CLIP's temperature.

Each tower maps its inputs to (B, D) vectors of one space; ``photo_inputs`` turns photo paths
into what ``image_batch`` later slices (cached features, or the paths themselves).
"""

from __future__ import annotations

import functools
import re
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prodclass.models.contrastive import MAX_LOGIT_SCALE, LogitScale
from prodclass.models.feature_cache import FeatureCache, trunk_activations
from prodclass.models.image_effnet import (
    EffNetConfig,
    EffNetTail,
    EffNetTrunk,
    load_pretrained_effnet,
)
from prodclass.models.multimodal_clip import (
    ClipInputs,
    freeze_tower,
    load_backbone,
    save_backbone,
)
from prodclass.models.text_hashed import HashedTextConfig, HashedTextEncoder, pack, text_to_ids


class Towers(nn.Module):
    """A text tower and an image tower into one ``embed_dim``-wide space, plus the scale."""

    embed_dim: int

    @abstractmethod
    def text_inputs(self, texts: list[str]) -> dict[str, torch.Tensor]: ...

    @abstractmethod
    def encode_text(self, **inputs: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def photo_inputs(self, paths: list[str]) -> Any:
        """Whatever ``image_batch`` slices, for the photos at ``paths`` (one row each)."""

    @abstractmethod
    def image_batch(self, photos: Any, rows: np.ndarray) -> torch.Tensor: ...

    @abstractmethod
    def encode_image(self, x: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def scale(self) -> torch.Tensor:
        """CLIP's inverse temperature (a learned positive scalar)."""

    def pretrained_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters that start pretrained (they get the smaller learning rate)."""
        return []


def _projection(width: int, hidden: int, out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.LayerNorm(width),
        nn.Dropout(dropout),
        nn.Linear(width, hidden),
        nn.GELU(),
        nn.Linear(hidden, out),
    )


# ---- packaged -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PackagedConfig:
    embed_dim: int = 256
    hidden: int = 512
    dropout: float = 0.1
    variant: str = "efficientnet-lite0"
    image_trainable_blocks: int = 0  # 0: frozen pooled features, computed once per photo
    text_buckets: int = 2**17
    text_dim: int = 64
    text_vectors: str | None = "fr_core_news_md"  # frozen mean word vectors beside the bag


_WORD = re.compile(r"\w+", re.UNICODE)


@functools.lru_cache(maxsize=50_000)
def _text_features(text: str, config: HashedTextConfig, vectors: str | None) -> tuple:
    """(bag ids, mean word vector or None) of one text; cached because every epoch of stage 1
    and every search query reads the same few thousand texts again."""
    ids = text_to_ids(text, config)
    if vectors is None:
        return ids, None
    from prodclass.models.text_lstm import _spacy_vocab

    vocab = _spacy_vocab(vectors)
    words = [w for w in _WORD.findall(text.lower())[: config.max_words] if vocab.has_vector(w)]
    if not words:
        return ids, np.zeros(vocab.vectors.shape[1], np.float32)
    return ids, np.mean([vocab.get_vector(w) for w in words], axis=0).astype(np.float32)


@functools.lru_cache(maxsize=2)
def _vector_scale(vectors: str) -> float:
    from prodclass.models.text_lstm import _spacy_vocab

    return float(np.asarray(_spacy_vocab(vectors).vectors.data).std()) or 1.0


class PackagedTowers(Towers):
    def __init__(self, config: PackagedConfig, cache_dir: Path | None = None) -> None:
        super().__init__()
        self.config = config
        self.embed_dim = config.embed_dim
        self.text_config = HashedTextConfig(buckets=config.text_buckets, dim=config.text_dim)
        self.text_encoder = HashedTextEncoder(self.text_config)
        self.vector_dim = 0
        if config.text_vectors is not None:
            from prodclass.models.text_lstm import _spacy_vocab

            self.vector_dim = int(_spacy_vocab(config.text_vectors).vectors.shape[1])
        width = config.text_dim + self.vector_dim
        self.text_proj = _projection(width, config.hidden, config.embed_dim, config.dropout)
        self.effnet_config = EffNetConfig(
            config.variant, trainable_blocks=config.image_trainable_blocks
        )
        net = load_pretrained_effnet(config.variant)
        self.tail = EffNetTail(net, self.effnet_config)  # last blocks + conv head + pooling
        if config.image_trainable_blocks == 0:
            self.tail.requires_grad_(False)
        self.image_proj = _projection(
            self.tail.out_dim, config.hidden, config.embed_dim, config.dropout
        )
        self.logit_scale = LogitScale()
        self.cache_dir = cache_dir
        self._trunk: EffNetTrunk | None = None

    @property
    def frozen_image(self) -> bool:
        return self.config.image_trainable_blocks == 0

    def train(self, mode: bool = True) -> PackagedTowers:
        super().train(mode)
        if self.frozen_image:  # frozen batch norms keep their pretrained statistics
            self.tail.eval()
        return self

    def text_inputs(self, texts: list[str]) -> dict[str, torch.Tensor]:
        vectors = self.config.text_vectors
        features = [_text_features(t, self.text_config, vectors) for t in texts]
        ids, offsets = pack([f[0] for f in features])
        out = {"ids": ids, "offsets": offsets}
        if vectors is not None:
            mean = np.stack([f[1] for f in features]) if features else np.zeros((0, 1))
            out["vectors"] = torch.from_numpy(mean.astype(np.float32) / _vector_scale(vectors))
        return out

    def encode_text(  # type: ignore[override]
        self, ids: torch.Tensor, offsets: torch.Tensor, vectors: torch.Tensor | None = None
    ) -> torch.Tensor:
        bag = self.text_encoder(ids, offsets)  # (B, text_dim)
        if vectors is not None:
            bag = torch.cat([bag, vectors.reshape(len(bag), -1)], dim=1)  # (B, text_dim + 300)
        return self.text_proj(bag)  # (B, D)

    def photo_inputs(self, paths: list[str]) -> np.ndarray:
        """(N, 1280) float32 pooled features when the image tower is frozen, else (N, C, 7,
        7) float16 trunk activations for the trainable blocks; trunk output comes from the
        on-disk cache when another run already computed it."""
        if not paths:
            return np.zeros((0, self.tail.out_dim), np.float32)
        if self._trunk is None:
            net = load_pretrained_effnet(self.config.variant)
            # not a submodule: the frozen trunk comes from the package, never from saved weights
            object.__setattr__(self, "_trunk", EffNetTrunk(net, self.effnet_config))
        cache = FeatureCache.at(self.cache_dir) if self.cache_dir is not None else None
        acts = trunk_activations(
            paths, self._trunk, cache, self.effnet_config, progress=len(paths) > 64
        )[:, 0]  # (N, C, h, w)
        if not self.frozen_image:
            return acts
        out = []
        self.tail.eval()
        with torch.inference_mode():
            for start in range(0, len(acts), 128):
                out.append(self.tail(torch.from_numpy(acts[start : start + 128])).numpy())
        return np.concatenate(out).astype(np.float32)

    def image_batch(self, photos: np.ndarray, rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(photos[rows]))

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        if not self.frozen_image:
            x = self.tail(x)  # (B, C, 7, 7) activations -> (B, 1280)
        return self.image_proj(x.float())  # (B, D)

    def scale(self) -> torch.Tensor:
        return self.logit_scale()

    def pretrained_parameters(self) -> list[nn.Parameter]:
        return [q for q in self.tail.parameters() if q.requires_grad]


# ---- real CLIP ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipTowersConfig:
    vision_trainable_layers: int = 2
    text_trainable_layers: int = 2
    max_text_tokens: int = 77


class ClipTowers(Towers):
    """A Hugging Face CLIP-style model (CLIP, MetaCLIP 2, AltCLIP) from a local folder."""

    def __init__(self, folder: str, config: ClipTowersConfig) -> None:
        super().__init__()
        self.config = config
        clip, tokenizer, processor = load_backbone(folder)
        self.clip = clip
        clip.requires_grad_(False)
        freeze_tower(
            clip.vision_model,
            getattr(clip, "visual_projection", None),
            config.vision_trainable_layers,
        )
        freeze_tower(
            clip.text_model, getattr(clip, "text_projection", None), config.text_trainable_layers
        )
        if not hasattr(clip, "logit_scale"):
            raise ValueError(f"the model in {folder} has no logit_scale: not a CLIP-style model")
        clip.logit_scale.requires_grad_(True)
        limit = getattr(clip.config.text_config, "max_position_embeddings", None)
        max_tokens = min(config.max_text_tokens, limit or config.max_text_tokens)
        self.inputs = ClipInputs(tokenizer, processor, max_tokens)
        self.embed_dim = int(getattr(clip.config, "projection_dim", 0)) or self._probe_width()

    def _probe_width(self) -> int:
        with torch.inference_mode():
            ids, mask = self.inputs.tokens(["a"])
            return int(self.encode_text(input_ids=ids, attention_mask=mask).shape[1])

    def text_inputs(self, texts: list[str]) -> dict[str, torch.Tensor]:
        ids, mask = self.inputs.tokens(texts)
        return {"input_ids": ids, "attention_mask": mask}

    def encode_text(  # type: ignore[override]
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        out = self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        return getattr(out, "pooler_output", out)

    def photo_inputs(self, paths: list[str]) -> np.ndarray:
        return np.asarray(paths, dtype=object)  # decoded batch by batch

    def image_batch(self, photos: np.ndarray, rows: np.ndarray) -> torch.Tensor:
        return self.inputs.pixels([str(p) for p in photos[rows]])

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        out = self.clip.get_image_features(pixel_values=x)
        return getattr(out, "pooler_output", out)

    def scale(self) -> torch.Tensor:
        return self.clip.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()

    def pretrained_parameters(self) -> list[nn.Parameter]:
        return [
            q
            for name, q in self.clip.named_parameters()
            if q.requires_grad and name != "logit_scale"
        ]

    def save_backbone(self, folder: Path) -> None:
        save_backbone(self.clip, self.inputs, folder)
