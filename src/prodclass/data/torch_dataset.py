"""A torch Dataset over prepared products: one photo decoded per item, on demand."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import torch
from torch.utils.data import Dataset

from prodclass.data.dataset import load_image_or_none

ImageTransform = Callable[[Any], torch.Tensor]


class ProductDataset(Dataset):
    """Items: text, image tensor (zeros when missing), has_image mask, label index.

    Missing photos become a zero tensor plus ``has_image=False`` so batches stay rectangular
    and models mask the image branch instead of learning from blank pixels.
    """

    def __init__(
        self,
        products: pd.DataFrame,
        image_transform: ImageTransform,
        image_shape: tuple[int, int, int],
        classes: list[int] | None = None,
    ) -> None:
        self.texts = products["text"].tolist()
        self.image_paths = products["image_path"].tolist()
        self.transform = image_transform
        self.image_shape = image_shape
        index = {c: i for i, c in enumerate(classes or [])}
        labels = products["label"] if "label" in products and classes else None
        self.targets = [index[int(v)] for v in labels] if labels is not None else None

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = load_image_or_none(self.image_paths[i])
        item: dict[str, Any] = {
            "text": self.texts[i],
            "image": self.transform(image) if image is not None else torch.zeros(self.image_shape),
            "has_image": image is not None,
        }
        if self.targets is not None:
            item["target"] = self.targets[i]
        return item
