"""The multimodal network: text and/or image in, 27-way logits out.

Reads top to bottom: each present input is encoded and projected to a common width, absent
ones are zeroed, the presence flags are appended, and a small head fuses them. Inputs:

- text: hashed n-grams of the product's title + description, plus the words Tesseract reads on
  its photo (OCR) when the family uses OCR; one vocabulary, so "playstation" read on a cover
  means what it means in a title;
- image: the trainable tail of EfficientNet-Lite over cached trunk activations;
- stacked: out-of-fold log-probabilities of the TF-IDF model (stacking), so the net learns how
  far to trust that strong n-gram member next to its own encoders. They also enter the logits
  directly (scaled by a learnt gain): the net starts from the member's answer and learns
  corrections to it, instead of having to rediscover from 2,000 products what the n-grams
  already know (without this shortcut it did worse than the member alone on text).

Missing inputs are the normal case in this catalogue (a third of the products have no photo, a
third no text): the head sees the flags, and training hides one modality of products that have
both (``hide_one_modality``) so that each branch also learns to stand alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from prodclass.models.text_hashed import HashedTextConfig, HashedTextEncoder

# presence flags the head reads, in this order
FLAGS = ("has_text", "has_image", "has_ocr")


@dataclass(frozen=True)
class MultimodalConfig:
    n_classes: int = 27
    hidden: int = 256
    dropout: float = 0.3
    image_dim: int = 1280  # width of the image tail's pooled output (0: no image branch)
    stack_dim: int = 27  # classes in each stacked member's log-probabilities (0: no stacking)
    stack_members: int = 1  # stacked members, side by side in ``stacked``
    stack_residual: bool = True  # also add gain * member log-probabilities to the logits
    text: HashedTextConfig | None = HashedTextConfig()  # None: no text branch


def hide_one_modality(
    has_text: np.ndarray, has_image: np.ndarray, rate: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Modality dropout: of the products with both, hide the text or the photo (half each)
    of a ``rate`` share, so the model also learns to classify from either one alone."""
    both = has_text & has_image
    hide = both & (rng.random(len(both)) < rate)
    hide_text = hide & (rng.random(len(both)) < 0.5)
    return has_text & ~hide_text, has_image & ~(hide & ~hide_text)


def fusion_head(width: int, hidden: int, n_classes: int, dropout: float) -> nn.Sequential:
    """The head every fusion net ends with: (B, width) concatenated parts -> (B, n_classes)."""
    return nn.Sequential(
        nn.LayerNorm(width),
        nn.Dropout(dropout),
        nn.Linear(width, hidden),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, n_classes),
    )


class MultimodalNet(nn.Module):
    def __init__(self, config: MultimodalConfig, image_tail: nn.Module | None) -> None:
        super().__init__()
        self.config = config
        h = config.hidden
        self.text_encoder = self.text_proj = None
        if config.text is not None:
            self.text_encoder = HashedTextEncoder(config.text)
            self.text_proj = nn.Sequential(nn.Linear(config.text.dim, h), nn.GELU())
        self.image_tail = self.image_proj = None
        if config.image_dim:
            if image_tail is None:
                raise ValueError("image_dim > 0 needs an image tail")
            self.image_tail = image_tail  # trainable end of the image encoder
            self.image_proj = nn.Sequential(
                nn.Dropout(config.dropout), nn.Linear(config.image_dim, h), nn.GELU()
            )
        stack_width = config.stack_dim * config.stack_members
        self.stack_proj = (
            nn.Sequential(nn.Linear(stack_width, h), nn.GELU()) if stack_width else None
        )
        # each member's weight in the logits, depending on which inputs the product has (a
        # photo member that is good alone may still deserve less weight next to a title);
        # all 1 at initialisation, so the net starts from the product of the members'
        # probabilities (late fusion)
        self.stack_gain: nn.Linear | None = None
        if stack_width and config.stack_residual:
            self.stack_gain = nn.Linear(len(FLAGS), config.stack_members)
            nn.init.zeros_(self.stack_gain.weight)
            nn.init.ones_(self.stack_gain.bias)
        n_parts = sum(x is not None for x in (self.text_proj, self.image_proj, self.stack_proj))
        self.head = fusion_head(n_parts * h + len(FLAGS), h, config.n_classes, config.dropout)

    def forward(
        self,
        text_ids: torch.Tensor,  # (T,) flat n-gram ids of the batch
        text_offsets: torch.Tensor,  # (B,)
        image_act: torch.Tensor,  # (B_img, C, h, w) trunk activations of rows with has_image
        has_text: torch.Tensor,  # (B,) bool: title/description given
        has_image: torch.Tensor,  # (B,) bool; has_image.sum() == B_img, rows in batch order
        has_ocr: torch.Tensor,  # (B,) bool: words were read on the photo
        stacked: torch.Tensor | None = None,  # (B, M * C) log-probabilities of M members
    ) -> torch.Tensor:
        batch = has_text.shape[0]
        any_words = (has_text | has_ocr)[:, None]  # the text inputs read title and OCR alike
        parts = []
        if self.text_encoder is not None:
            t = self.text_proj(self.text_encoder(text_ids, text_offsets))  # (B, H)
            parts.append(t * any_words)
        if self.image_tail is not None:
            i = torch.zeros(batch, self.config.hidden, device=has_image.device)  # (B, H)
            photo_rows = has_image.nonzero().squeeze(1)  # (B_img,)
            if len(photo_rows) > 0:
                projected = self.image_proj(self.image_tail(image_act))  # float16 in autocast
                i = i.to(projected.dtype).index_copy(0, photo_rows, projected)
            parts.append(i)
        if self.stack_proj is not None:
            parts.append(self.stack_proj(stacked))
        flags = torch.stack([has_text, has_image, has_ocr], dim=1).float()  # (B, 3)
        logits = self.head(torch.cat([*parts, flags], dim=1))  # (B, n_classes)
        if self.stack_gain is not None:
            # a member that has nothing to say about a row (no words, no photo) gave it zeros
            per_member = stacked.view(batch, self.config.stack_members, -1)  # (B, M, C)
            gains = self.stack_gain(flags)  # (B, M)
            logits = logits + (gains[:, :, None] * per_member).sum(dim=1)
        return logits


def fit_stack_gains(
    gain: nn.Linear,
    flags: torch.Tensor,  # (N, 3) presence flags, FLAGS order
    stacked: torch.Tensor,  # (N, M * C) out-of-fold member log-probabilities
    targets: torch.Tensor,  # (N,) class indices
    weight: torch.Tensor | None = None,  # (C,) class weights of the loss
    max_iter: int = 100,
) -> None:
    """Set the members' gains to the best late fusion of their out-of-fold answers (a small
    stacker fitted by L-BFGS), so the net's training starts from it.

    Why: the members are not equally sure of themselves (the photo member's probabilities are
    much sharper than the TF-IDF member's), and the head learns too slowly to re-weigh them
    in a few epochs; a product with both inputs would otherwise follow the sharper member.
    """
    per_member = stacked.view(len(stacked), gain.out_features, -1)  # (N, M, C)
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    # with a line search: plain L-BFGS steps can overshoot and send the gains to thousands
    optimizer = torch.optim.LBFGS(
        gain.parameters(), lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = (gain(flags)[:, :, None] * per_member).sum(dim=1)  # (N, C)
        loss = loss_fn(logits, targets)
        loss.backward()
        return loss

    optimizer.step(closure)
