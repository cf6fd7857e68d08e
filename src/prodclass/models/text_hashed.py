"""fastText-style text encoder: hashed word, word-bigram and character n-gram embeddings.

Merchant titles are short, misspelt and full of glued words and references ("ps4", "x240mm");
hashed character n-grams give every such token a useful vector without a vocabulary, and an
EmbeddingBag averages them in one cheap CPU op.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import torch
from torch import nn

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class HashedTextConfig:
    buckets: int = 2**18  # hash space shared by all n-gram kinds
    dim: int = 64
    char_min: int = 3
    char_max: int = 5
    max_words: int = 160  # title + start of the description carry the signal


def _bucket(token: str, buckets: int) -> int:
    # crc32 is stable across processes (unlike hash()), so ids survive save/load
    return zlib.crc32(token.encode("utf-8")) % buckets


def text_to_ids(text: str, config: HashedTextConfig) -> list[int]:
    """Bucket ids of the words, word bigrams and character n-grams of a cleaned text."""
    words = _WORD.findall(text)[: config.max_words]
    ids = [_bucket("w:" + w, config.buckets) for w in words]
    ids += [_bucket(f"b:{a} {b}", config.buckets) for a, b in zip(words, words[1:])]
    for word in words:
        marked = f"<{word}>"
        for n in range(config.char_min, config.char_max + 1):
            ids += [
                _bucket("c:" + marked[i : i + n], config.buckets)
                for i in range(max(len(marked) - n + 1, 0))
            ]
    return ids


def pack(batch_ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten a batch of id lists into (ids, offsets) for nn.EmbeddingBag."""
    offsets = torch.zeros(len(batch_ids), dtype=torch.long)
    lengths = torch.tensor([len(ids) for ids in batch_ids], dtype=torch.long)
    if len(batch_ids) > 1:
        offsets[1:] = torch.cumsum(lengths[:-1], dim=0)
    flat = torch.tensor([i for ids in batch_ids for i in ids], dtype=torch.long)
    return flat, offsets


class HashedTextEncoder(nn.Module):
    """(ids, offsets) -> (B, dim) mean of n-gram embeddings; an empty text gives zeros."""

    def __init__(self, config: HashedTextConfig) -> None:
        super().__init__()
        self.config = config
        self.bag = nn.EmbeddingBag(config.buckets, config.dim, mode="mean")
        nn.init.normal_(self.bag.weight, std=0.02)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.bag(ids, offsets)  # (B, dim)
