"""Families `multimodal-effnet` and `image-effnet`: EfficientNet-Lite photo branch + hashed
n-gram text branch (title, description and the words read on the photo) + two stacked members,
fused by one head (``multimodal.py``), temperature-calibrated.

The model in parts: what the net reads and how a batch of it is assembled
(``effnet_inputs.py``), the members stacked out of fold (``stacked_members.py``), the net as
this family builds and stores it (``effnet_net.py``). This module ties them together.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression

from prodclass.models import effnet_net
from prodclass.models import stacked_members as members
from prodclass.models.base import FamilyParams, ProductClassifier
from prodclass.models.effnet_inputs import (
    VARIANTS,
    FrozenEffnet,
    NetInputs,
    Variant,
    net_batch,
    read_products,
)
from prodclass.models.feature_cache import ActivationStore, FeatureCache
from prodclass.models.image_effnet import EffNetConfig
from prodclass.models.multimodal import MultimodalNet
from prodclass.models.product_words import ocr_words
from prodclass.models.text_hashed import HashedTextConfig
from prodclass.models.tfidf_linear import TfidfLinearClassifier
from prodclass.models.torch_loop import (
    LoopConfig,
    checkpoint_path_for,
    class_weights,
    fit_and_calibrate,
    seed_everything,
)

log = logging.getLogger(__name__)


class MultimodalEffnetParams(FamilyParams):
    use_text: bool = True  # hashed n-gram branch (and TF-IDF stacking) over the product's words
    use_image: bool = True  # EfficientNet-Lite branch
    ocr: bool = True  # add the words Tesseract reads on the photo to the product's words
    variant: str = "efficientnet-lite2"  # ImageNet-pretrained, 260 px; lite0 is 2.5x cheaper
    trainable_blocks: int = 1
    views: tuple[str, ...] = ("orig", "hflip")  # cached augmentations of each photo
    hidden: int = 256
    dropout: float = 0.3
    modality_dropout: float = 0.25
    text_buckets: int = 2**18
    text_dim: int = 64
    stack_tfidf: bool = True
    stack_photo: bool = True  # logistic regression over frozen pretrained photo features
    photo_member_C: float = 0.1  # its inverse regularisation strength
    stack_folds: int = 5
    tfidf: dict[str, Any] = {}
    epochs: int = 25
    batch_size: int = 64
    lr: float = 5e-4
    image_lr: float = 2e-4  # discriminative: pretrained blocks move ten times slower
    weight_decay: float = 0.01
    label_smoothing: float = 0.05
    patience: int = 5
    threads: int = 2
    seed: int = 42


class MultimodalEffnetClassifier(ProductClassifier):
    family = "multimodal-effnet"
    Params = MultimodalEffnetParams
    params: MultimodalEffnetParams

    def __init__(self, params: MultimodalEffnetParams, classes: list[int] | None = None) -> None:
        super().__init__(params, classes)
        self.effnet_config = EffNetConfig(params.variant, trainable_blocks=params.trainable_blocks)
        self.text_config = (
            HashedTextConfig(buckets=params.text_buckets, dim=params.text_dim)
            if params.use_text
            else None
        )
        self.net: MultimodalNet | None = None
        self.tfidf: TfidfLinearClassifier | None = None
        self.photo_member: LogisticRegression | None = None
        self.stacking = members.Stacking(
            text=params.use_text and params.stack_tfidf,
            photo=params.use_image and params.stack_photo,
            tfidf=params.tfidf,
            photo_C=params.photo_member_C,
            folds=params.stack_folds,
            seed=params.seed,
        )
        self.temperature = 1.0
        self._frozen: FrozenEffnet | None = None
        self.cache: FeatureCache | None = None  # None: the one under settings.state_dir
        self.ocr_cache_dir: Path | None = None  # None: state_dir/ocr-cache

    # ---- inputs -------------------------------------------------------------------------
    @property
    def frozen(self) -> FrozenEffnet:
        """The pretrained network the inputs are computed with, on this model's device."""
        if self._frozen is None:
            self._frozen = FrozenEffnet(self.effnet_config, self.device)
        return self._frozen

    def cache_photo_features(self, paths: list[str]) -> ActivationStore:
        return self.frozen.activations(paths, self.cache, self.params.views)

    def _activations(
        self, products: pd.DataFrame, views: tuple[str, ...]
    ) -> tuple[np.ndarray, ActivationStore | None]:
        """Which products have a photo the model reads, and the photos' trunk activations
        (N_photo, V, C, h, w), computed into the on-disk cache and read back on demand."""
        paths = list(products["image_path"]) if self.params.use_image else [""] * len(products)
        return self.frozen.photo_activations(paths, self.cache, views)

    def _ocr_words(self, products: pd.DataFrame) -> list[str]:
        if not (self.params.ocr and self.params.use_text):
            return [""] * len(products)
        return ocr_words(list(products["image_path"]), self.ocr_cache_dir)

    def _inputs(
        self,
        products: pd.DataFrame,
        views: tuple[str, ...],
        variants: tuple[Variant, ...],
        oof_stack: bool = False,
    ) -> NetInputs:
        """What the net reads about ``products`` (each photo under ``views``); with
        ``oof_stack`` the members' answers are out of fold (labelled training rows), else the
        fitted members'."""
        photos = self._activations(products, views)
        inp = read_products(products, variants, photos, self._ocr_words(products), self.text_config)
        if self.stacking.photo:
            inp.photo_features = self.frozen.pooled(inp.acts, len(views))
        if oof_stack:
            inp.stacked = members.oof_answers(
                self.stacking, self.classes_, inp, products["label"], variants
            )
        else:
            inp.stacked = members.answers(
                self.stacking, self.classes_, self.tfidf, self.photo_member, inp, variants
            )
        return inp

    def _training_rows(self, train: pd.DataFrame) -> pd.DataFrame:
        """Rows that teach this configuration something (all of them, for multimodal)."""
        return train

    # ---- training -----------------------------------------------------------------------
    def fit(self, train: pd.DataFrame, val: pd.DataFrame | None = None) -> dict[str, Any]:
        if val is None or val.empty:
            raise ValueError(f"{self.family} needs a validation split for early stopping")
        p = self.params
        seed_everything(p.seed)
        torch.set_num_threads(p.threads)
        train, val = self._training_rows(train), self._training_rows(val)
        self.classes_ = np.asarray(sorted(int(c) for c in train["label"].unique()), np.int64)
        index = {c: i for i, c in enumerate(self.classes_)}
        y_train = np.asarray([index[int(c)] for c in train["label"]])
        y_val = np.asarray([index.get(int(c), -1) for c in val["label"]])

        log.info(
            "%s: inputs of %d train and %d val products (photo features and OCR are "
            "cached by content)",
            self.family,
            len(train),
            len(val),
        )
        train_in = self._inputs(train, p.views, VARIANTS, oof_stack=True)
        self.tfidf, self.photo_member = members.fit_members(self.stacking, train_in, train["label"])
        val_in = self._inputs(val, ("orig",), ("full",))

        self.net = net = effnet_net.new_net(
            n_classes=len(self.classes_), hidden=p.hidden, dropout=p.dropout,
            stack_members=self.stacking.count, text=self.text_config,
            image=self.effnet_config if p.use_image else None,
        )  # fmt: skip
        weights = class_weights(y_train, len(self.classes_))
        effnet_net.start_from_members(net, train_in, y_train, weights)
        net.to(self.device)  # after the gains' fit, which runs on the CPU tensors
        groups = effnet_net.param_groups(net, p.lr, p.image_lr)
        optimizer = torch.optim.AdamW(groups, weight_decay=p.weight_decay)
        loss_fn = torch.nn.CrossEntropyLoss(weight=weights, label_smoothing=p.label_smoothing)

        def batches(rng: np.random.Generator):
            order = rng.permutation(len(train))
            view = rng.integers(0, len(p.views), size=len(train))
            for start in range(0, len(order), p.batch_size):
                rows = order[start : start + p.batch_size]
                batch = net_batch(train_in, rows, p.modality_dropout, view, rng)
                yield batch, torch.from_numpy(y_train[rows])

        checkpoint = checkpoint_path_for(self.family, p.model_dump_json(), train.index)
        self.temperature, facts = fit_and_calibrate(
            net,
            optimizer,
            loss_fn,
            batches,
            lambda: effnet_net.logits(net, val_in, self.device),
            y_val,
            LoopConfig(epochs=p.epochs, patience=p.patience),
            seed=p.seed,
            checkpoint_path=checkpoint,
            on_epoch_end=self.epoch_callback,
        )
        return facts | {"n_train_rows": len(train)}

    # ---- inference ----------------------------------------------------------------------
    def predict_proba(self, products: pd.DataFrame) -> np.ndarray:
        if self.net is None:
            raise RuntimeError("model is not trained")
        torch.set_num_threads(self.predict_threads)
        inp = self._inputs(products, ("orig",), ("full",))
        logits = effnet_net.logits(self.net, inp, self.device) / self.temperature
        return torch.softmax(torch.from_numpy(logits), dim=1).numpy()

    def embed(self, products: pd.DataFrame) -> dict[str, Any]:
        """Text: the TF-IDF member's vector (sparse); image: the pretrained photo features the
        photo member reads (pooled EfficientNet-Lite activations)."""
        out: dict[str, Any] = {}
        if self.tfidf is not None:
            out["text"] = self.tfidf.embed(products)["text"]
        if self.params.use_image:
            torch.set_num_threads(self.predict_threads)
            has_image, acts = self._activations(products, ("orig",))
            features = self.frozen.pooled(acts, 1)[:, 0]  # (N_photo, D)
            width = features.shape[1] if len(features) else self._photo_width()
            if width:
                image = np.zeros((len(products), width), np.float32)
                if len(features):
                    image[has_image] = features
                out["image"] = image
        return out

    def _photo_width(self) -> int:
        """Width of the frozen photo features without running the network (0 if unknown)."""
        member = self.photo_member
        return int(member.coef_.shape[1]) if member is not None else 0

    # ---- artefact -----------------------------------------------------------------------
    def _save_files(self, path: Path) -> None:
        assert self.net is not None
        effnet_net.save_net(path, self.net, self.temperature, self.effnet_config)
        members.save_members(path, self.tfidf, self.photo_member)

    def _load_files(self, path: Path) -> None:
        self.net, self.temperature = effnet_net.load_net(path, self.effnet_config, self.device)
        self.tfidf, self.photo_member = members.load_members(path)


class ImageEffnetParams(MultimodalEffnetParams):
    """Photo only: the fine-tuned EfficientNet-Lite branch and its head."""

    use_text: bool = False
    ocr: bool = False
    stack_tfidf: bool = False
    modality_dropout: float = 0.0


class ImageEffnetClassifier(MultimodalEffnetClassifier):
    """Family `image-effnet`: learns from products with a photo; products without one get
    the head's answer for "no input" (close to the class prior)."""

    family = "image-effnet"
    Params = ImageEffnetParams

    def _training_rows(self, train: pd.DataFrame) -> pd.DataFrame:
        rows = train[train["image_path"] != ""]
        if rows.empty:
            raise ValueError("image-effnet needs products with a photo; the training set has none")
        return rows
