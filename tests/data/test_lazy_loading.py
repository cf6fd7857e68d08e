"""Lazy loading: photos are decoded per batch/item, products without photos stay usable."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from prodclass.data.dataset import iter_batches
from prodclass.data.prepare import SplitParams, load_prepared, prepare
from prodclass.data.torch_dataset import ProductDataset
from prodclass.data.validate import validate


@pytest.fixture
def products(subset, tmp_path):
    prepare(validate(subset), tmp_path / "prepared", SplitParams())
    return load_prepared(tmp_path / "prepared")


def test_batches_cover_every_product_once_with_photos_where_they_exist(products):
    seen, with_photo = [], 0
    for batch in iter_batches(products, batch_size=8):
        assert len(batch.texts) == len(batch.images) <= 8
        seen += batch.row_ids
        for row_id, image in zip(batch.row_ids, batch.images):
            assert (image is not None) == (products.at[row_id, "image_path"] != "")
            with_photo += image is not None
    assert seen == list(products.index)
    assert with_photo == 24


def test_batches_are_a_generator_not_a_list(products):
    batches = iter_batches(products, batch_size=4)
    assert iter(batches) is batches


def test_torch_dataset_masks_missing_photos(products):
    def to_tensor(image):
        return (
            torch.from_numpy(np.asarray(image.resize((32, 32)), dtype=np.float32)).permute(2, 0, 1)
            / 255
        )

    classes = sorted(int(c) for c in products["label"].unique())
    dataset = ProductDataset(products, to_tensor, (3, 32, 32), classes)
    batch = next(iter(DataLoader(dataset, batch_size=len(dataset))))
    assert batch["image"].shape == (len(products), 3, 32, 32)
    assert batch["has_image"].sum().item() == 24
    blank = batch["image"][~batch["has_image"]]
    assert torch.count_nonzero(blank) == 0
    assert batch["target"].max().item() < len(classes)
