"""Families `multimodal-effnet` and `image-effnet`: EfficientNet-Lite photo branch + hashed
n-gram text branch (title, description and the words read on the photo) + two stacked members,
fused by one head (``multimodal.py``), temperature-calibrated.

The stacked members are the strong simple models of each modality: TF-IDF + linear model over
the product's words, and a logistic regression over the frozen pretrained photo features. They
are fitted out of fold on the training rows, so the net sees how good they are on products
they never saw, and it starts from their combined answer (late fusion, each member weighed by
a stacker fitted on those out-of-fold answers) and learns corrections: with 2,000 products, a
net left to learn everything alone did worse than either member.

Training on a CPU stays fast because the frozen part of the image network runs once per photo
and view, and Tesseract once per photo (both cached on disk by content hash); each epoch only
runs the last image blocks, the text bag and the head.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import joblib
import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from prodclass.models.base import FamilyParams, ProductClassifier
from prodclass.models.device import autocast, to_device
from prodclass.models.feature_cache import ActivationStore, FeatureCache, cache_activations
from prodclass.models.image_effnet import (
    EffNetConfig,
    EffNetTail,
    EffNetTrunk,
    encoder_version,
    load_pretrained_effnet,
)
from prodclass.models.member_outputs import aligned_logproba
from prodclass.models.multimodal import (
    MultimodalConfig,
    MultimodalNet,
    fit_stack_gains,
    hide_one_modality,
)
from prodclass.models.photo_features import pooled_features
from prodclass.models.product_words import ocr_words
from prodclass.models.text_hashed import HashedTextConfig, pack, text_to_ids
from prodclass.models.tfidf_linear import TfidfLinearClassifier, TfidfLinearParams
from prodclass.models.torch_loop import (
    LoopConfig,
    checkpoint_path_for,
    class_weights,
    fit_and_calibrate,
    seed_everything,
)

log = logging.getLogger(__name__)

NET_FILE = "net.pt"
TFIDF_DIR = "tfidf"
PHOTO_MEMBER_FILE = "photo_member.joblib"

# What a product's words are made of, per input variant: the full product, and what is left of
# it when modality dropout hides its photo (no OCR words either) or its text.
Variant = Literal["full", "text_only", "image_only"]
VARIANTS: tuple[Variant, ...] = ("full", "text_only", "image_only")


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


@dataclass
class _Inputs:
    """Everything the net reads about N products, computed once per fit or predict call."""

    has_text: np.ndarray  # (N,) bool: title or description given
    has_image: np.ndarray  # (N,) bool
    has_ocr: np.ndarray  # (N,) bool: words were read on the photo
    photo_index: np.ndarray  # (N,) row of each product in acts (-1: no photo)
    acts: ActivationStore | None  # (N_photo, V, C, h, w) trunk activations, on disk (None: no
    # photo); each batch reads its own rows, so memory does not grow with the catalogue
    photo_features: np.ndarray | None  # (N_photo, V, D) frozen pooled features (photo member)
    ids: dict[str, list[list[int]]]  # variant -> per-product n-gram ids
    stacked: dict[str, np.ndarray]  # variant -> (N, members * C) member log-probabilities
    words: list[str]  # title + description + OCR words, what the TF-IDF member reads


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
        self._frozen_tail: EffNetTail | None = None
        self.temperature = 1.0
        self._trunk: EffNetTrunk | None = None
        self.cache: FeatureCache | None = None  # None: the one under settings.state_dir
        self.ocr_cache_dir: Path | None = None  # None: state_dir/ocr-cache

    # ---- inputs -------------------------------------------------------------------------
    def _trunk_model(self) -> EffNetTrunk:
        if self._trunk is None:
            # float32 on every device (no autocast): cached activations must not depend on
            # where they were computed beyond rounding
            self._trunk = EffNetTrunk(
                load_pretrained_effnet(self.params.variant), self.effnet_config
            ).to(self.device)
        return self._trunk

    def cache_photo_features(self, paths: list[str]) -> ActivationStore:
        """Compute into the feature cache the trunk activations this configuration reads for
        ``paths``, under every training view (what a fit would compute first). Partitioned
        pipeline assets call it per photo shard, so workers fill the cache the models read."""
        cache = self.cache or FeatureCache.default()
        return cache_activations(
            paths, self._trunk_model(), cache, self.effnet_config, views=self.params.views,
            progress=False,
        )  # fmt: skip

    def _members(self) -> int:
        """How many stacked members this configuration has (0, 1 or 2)."""
        p = self.params
        return int(p.use_text and p.stack_tfidf) + int(p.use_image and p.stack_photo)

    def _frozen_features(self, acts: ActivationStore | None, views: int) -> np.ndarray:
        """(N_photo, V, D) pooled features of the untouched pretrained network: what the photo
        member reads. Cheap: only the last blocks run, over cached trunk activations streamed
        from disk 128 photos at a time (D = 1280 floats per photo and view stay in memory)."""
        if acts is None or len(acts) == 0:  # no photo: nothing to run, no network to load
            return np.zeros((0, views, 0), np.float32)
        if self._frozen_tail is None:
            tail = EffNetTail(load_pretrained_effnet(self.params.variant), self.effnet_config)
            self._frozen_tail = tail.requires_grad_(False).eval().to(self.device)
        return pooled_features(self._frozen_tail, acts.chunks(128), views, self.device)

    def _aligned_logproba(self, member_classes: np.ndarray, proba: np.ndarray) -> np.ndarray:
        return aligned_logproba(self.classes_, member_classes, proba)

    def _photo_logproba(
        self, member: LogisticRegression | None, features: np.ndarray, has_image: np.ndarray
    ) -> np.ndarray:
        """(N, C) log-probabilities of the photo member (zeros for products without a photo);
        ``features`` holds one (D,) row per product with a photo."""
        out = np.zeros((len(has_image), len(self.classes_)), dtype=np.float32)
        if member is not None and has_image.any():
            out[has_image] = self._aligned_logproba(member.classes_, member.predict_proba(features))
        return out

    def _fit_photo_member(self, features: np.ndarray, labels: np.ndarray) -> LogisticRegression:
        """The photo member, taught by every view of each photo: (n, V, D) features, (n,)."""
        member = LogisticRegression(
            C=self.params.photo_member_C, class_weight="balanced", max_iter=2000
        )
        views = features.shape[1]
        return member.fit(features.reshape(-1, features.shape[2]), np.repeat(labels, views))

    def _oof_photo_logproba(
        self, labels: np.ndarray, features: np.ndarray, has_image: np.ndarray
    ) -> np.ndarray:
        """Out-of-fold photo member log-probabilities of the training rows (every view of a
        fold's photos teaches it; held-out photos are scored as they are, unmirrored)."""
        out = np.zeros((len(has_image), len(self.classes_)), dtype=np.float32)
        if has_image.sum() < 2 * self.params.stack_folds:
            log.warning("too few photos (%d) to stack the photo member", has_image.sum())
            return out
        y = labels[has_image]
        folds = StratifiedKFold(
            self.params.stack_folds, shuffle=True, random_state=self.params.seed
        )
        photo_rows = np.flatnonzero(has_image)
        for fold_train, fold_out in folds.split(features, y):
            member = self._fit_photo_member(features[fold_train], y[fold_train])
            proba = member.predict_proba(features[fold_out, 0])
            out[photo_rows[fold_out]] = self._aligned_logproba(member.classes_, proba)
        return out

    def _ocr_words(self, products: pd.DataFrame) -> list[str]:
        if not (self.params.ocr and self.params.use_text):
            return [""] * len(products)
        return ocr_words(list(products["image_path"]), self.ocr_cache_dir)

    def _words(self, products: pd.DataFrame, ocr: list[str]) -> dict[str, list[str]]:
        text = list(products["text"])
        return {
            "full": [f"{t} {o}".strip() for t, o in zip(text, ocr)],
            "text_only": text,
            "image_only": ocr,
        }

    def _activations(
        self, products: pd.DataFrame, views: tuple[str, ...]
    ) -> tuple[np.ndarray, ActivationStore | None]:
        """Which products have a photo the model reads, and the photos' trunk activations
        (N_photo, V, C, h, w), computed into the on-disk cache and read back on demand."""
        has_image = (products["image_path"] != "").to_numpy() & self.params.use_image
        acts = None
        if has_image.any():
            cache = self.cache or FeatureCache.default()
            paths = list(products["image_path"][has_image])
            acts = cache_activations(
                paths,
                self._trunk_model(),
                cache,
                self.effnet_config,
                views=views,
                progress=len(paths) > 64,
            )
        return has_image, acts

    def _inputs(
        self,
        products: pd.DataFrame,
        views: tuple[str, ...],
        variants: tuple[Variant, ...],
        oof_stack: bool = False,
    ) -> _Inputs:
        has_image, acts = self._activations(products, views)
        photo_index = np.where(has_image, np.cumsum(has_image) - 1, -1)
        ocr = self._ocr_words(products)
        words = self._words(products, ocr)
        ids: dict[str, list[list[int]]] = {}
        for v in variants:
            if self.text_config is not None:
                ids[v] = [text_to_ids(w, self.text_config) for w in words[v]]
            else:
                ids[v] = [[] for _ in range(len(products))]
        parts: dict[str, list[np.ndarray]] = {v: [] for v in variants}
        if self.params.use_text and self.params.stack_tfidf:
            text_parts = (
                self._oof_member_logproba(products, words, variants)
                if oof_stack
                else {v: self._member_logproba(self.tfidf, words[v]) for v in variants}
            )
            for v in variants:
                parts[v].append(text_parts[v])
        features = None
        if self.params.use_image and self.params.stack_photo:
            features = self._frozen_features(acts, len(views))
            if oof_stack:
                labels = np.asarray([int(c) for c in products["label"]])
                photo = self._oof_photo_logproba(labels, features, has_image)
            else:
                photo = self._photo_logproba(self.photo_member, features[:, 0], has_image)
            for v in variants:  # a hidden photo hides its member's answer too
                parts[v].append(np.zeros_like(photo) if v == "text_only" else photo)
        stacked = {v: np.concatenate(parts[v], axis=1) for v in variants if parts[v]}
        return _Inputs(
            has_text=(products["text"] != "").to_numpy() & self.params.use_text,
            has_image=has_image,
            has_ocr=np.asarray([bool(o) for o in ocr]),
            photo_index=photo_index,
            acts=acts,
            photo_features=features,
            ids=ids,
            stacked=stacked,
            words=words["full"],
        )

    def _member_logproba(
        self, member: TfidfLinearClassifier | None, words: list[str]
    ) -> np.ndarray:
        """(N, C) log-probabilities of a TF-IDF member, in this model's class order (zeros
        where a product has no words)."""
        out = np.zeros((len(words), len(self.classes_)), dtype=np.float32)
        rows = np.flatnonzero([bool(w) for w in words])
        if member is None or len(rows) == 0:
            return out
        proba = member.predict_proba(pd.DataFrame({"text": [words[r] for r in rows]}))
        out[rows] = self._aligned_logproba(member.classes_, proba)
        return out

    def _oof_member_logproba(
        self, train: pd.DataFrame, words: dict[str, list[str]], variants: tuple[Variant, ...]
    ) -> dict[str, np.ndarray]:
        """Out-of-fold member log-probabilities of the training rows: each row is scored by a
        member that never saw it, so the net learns how good the member is on unseen data."""
        n = len(train)
        out = {v: np.zeros((n, len(self.classes_)), dtype=np.float32) for v in variants}
        has_words = np.asarray([bool(w) for w in words["full"]])
        labels = train["label"].to_numpy()
        folds = StratifiedKFold(
            self.params.stack_folds, shuffle=True, random_state=self.params.seed
        )
        positions = np.flatnonzero(has_words)
        for fold_train, fold_out in folds.split(positions, labels[positions]):
            member = TfidfLinearClassifier(TfidfLinearParams(**self.params.tfidf))
            rows = positions[fold_train]
            member.fit(
                pd.DataFrame({"text": [words["full"][r] for r in rows], "label": labels[rows]})
            )
            held_out = positions[fold_out]
            for v in variants:
                out[v][held_out] = self._member_logproba(member, [words[v][r] for r in held_out])
        return out

    def _batch(
        self,
        inp: _Inputs,
        rows: np.ndarray,
        view: np.ndarray | None = None,
        rng: np.random.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Network inputs of ``rows``; in training, ``view`` picks each photo's augmentation
        and ``rng`` drives modality dropout."""
        has_text, has_image, has_ocr = inp.has_text[rows], inp.has_image[rows], inp.has_ocr[rows]
        variant = np.zeros(len(rows), dtype=np.int64)  # index into VARIANTS: 0 = full
        if rng is not None and self.params.modality_dropout > 0:
            keep_text, keep_image = hide_one_modality(
                has_text, has_image, self.params.modality_dropout, rng
            )
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
            "image_act": torch.from_numpy(self._photo_acts(inp, act_rows, act_views)),
            "has_text": torch.from_numpy(has_text),
            "has_image": torch.from_numpy(has_image),
            "has_ocr": torch.from_numpy(has_ocr),
        }
        if inp.stacked:
            batch["stacked"] = torch.from_numpy(
                np.stack([inp.stacked[name][r] for name, r in zip(names, rows)])
            )
        return batch

    @staticmethod
    def _photo_acts(inp: _Inputs, rows: np.ndarray, views: np.ndarray) -> np.ndarray:
        """(b, C, h, w) float32 activations of a batch's photos, read from the cache now."""
        if inp.acts is None or len(rows) == 0:
            return np.zeros((0, 1, 1, 1), np.float32)
        return inp.acts.take(rows, views).astype(np.float32)

    def _logits(self, inp: _Inputs, batch_size: int = 256) -> np.ndarray:
        assert self.net is not None
        self.net.eval()
        n = len(inp.has_text)
        out = []
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                rows = np.arange(start, min(start + batch_size, n))
                batch = to_device(self._batch(inp, rows), self.device)
                with autocast(self.device):
                    out.append(self.net(**batch).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.classes_)), np.float32)

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
        if p.use_text and p.stack_tfidf:
            self.tfidf = TfidfLinearClassifier(TfidfLinearParams(**p.tfidf))
            self.tfidf.fit(pd.DataFrame({"text": train_in.words, "label": train["label"]}))
        if train_in.photo_features is not None and train_in.has_image.any():
            labels = np.asarray(train["label"], dtype=int)[train_in.has_image]
            self.photo_member = self._fit_photo_member(train_in.photo_features, labels)
        val_in = self._inputs(val, ("orig",), ("full",))

        tail = None
        if p.use_image:
            tail = EffNetTail(load_pretrained_effnet(p.variant), self.effnet_config)
        config = MultimodalConfig(
            n_classes=len(self.classes_),
            hidden=p.hidden,
            dropout=p.dropout,
            image_dim=tail.out_dim if tail is not None else 0,
            stack_dim=len(self.classes_) if self._members() else 0,
            stack_members=self._members(),
            text=self.text_config,
        )
        self.net = MultimodalNet(config, tail)
        weights = class_weights(y_train, len(self.classes_))
        if self.net.stack_gain is not None:
            flags = np.stack([train_in.has_text, train_in.has_image, train_in.has_ocr], axis=1)
            fit_stack_gains(
                self.net.stack_gain,
                torch.from_numpy(flags.astype(np.float32)),
                torch.from_numpy(train_in.stacked["full"]),
                torch.from_numpy(y_train),
                weights,
            )
        self.net.to(self.device)  # after the gains' fit, which runs on the CPU tensors above
        tail_params = {id(q) for q in tail.parameters()} if tail is not None else set()
        groups = [
            {"params": [q for q in self.net.parameters() if id(q) not in tail_params], "lr": p.lr}
        ]
        if tail is not None:
            groups.append({"params": list(tail.parameters()), "lr": p.image_lr})
        optimizer = torch.optim.AdamW(groups, weight_decay=p.weight_decay)
        loss_fn = torch.nn.CrossEntropyLoss(weight=weights, label_smoothing=p.label_smoothing)

        def batches(rng: np.random.Generator):
            order = rng.permutation(len(train))
            view = rng.integers(0, len(p.views), size=len(train))
            for start in range(0, len(order), p.batch_size):
                rows = order[start : start + p.batch_size]
                yield self._batch(train_in, rows, view, rng), torch.from_numpy(y_train[rows])

        checkpoint = checkpoint_path_for(self.family, p.model_dump_json(), train.index)
        self.temperature, facts = fit_and_calibrate(
            self.net,
            optimizer,
            loss_fn,
            batches,
            lambda: self._logits(val_in),
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
        logits = self._logits(self._inputs(products, ("orig",), ("full",))) / self.temperature
        return torch.softmax(torch.from_numpy(logits), dim=1).numpy()

    def _photo_width(self) -> int:
        """Width of the frozen photo features without running the network (0 if unknown)."""
        member = self.photo_member
        return int(member.coef_.shape[1]) if member is not None else 0

    def embed(self, products: pd.DataFrame) -> dict[str, Any]:
        """Text: the TF-IDF member's vector (sparse); image: the pretrained photo features the
        photo member reads (pooled EfficientNet-Lite activations)."""
        out: dict[str, Any] = {}
        if self.tfidf is not None:
            out["text"] = self.tfidf.embed(products)["text"]
        if self.params.use_image:
            torch.set_num_threads(self.predict_threads)
            has_image, acts = self._activations(products, ("orig",))
            features = self._frozen_features(acts, 1)[:, 0]  # (N_photo, D)
            width = features.shape[1] if len(features) else self._photo_width()
            if width:
                image = np.zeros((len(products), width), np.float32)
                if len(features):
                    image[has_image] = features
                out["image"] = image
        return out

    # ---- artefact -----------------------------------------------------------------------
    def _save_files(self, path: Path) -> None:
        assert self.net is not None
        config = asdict(self.net.config)
        torch.save(
            {
                "state_dict": self.net.state_dict(),
                "config": json.dumps(config),
                "temperature": self.temperature,
                "encoder_version": encoder_version(self.effnet_config),
            },
            path / NET_FILE,
        )
        if self.tfidf is not None:
            self.tfidf.save(path / TFIDF_DIR)
        if self.photo_member is not None:
            joblib.dump(self.photo_member, path / PHOTO_MEMBER_FILE, compress=3)

    def _load_files(self, path: Path) -> None:
        # map_location: a model saved on a GPU loads on a CPU-only machine, and the reverse
        saved = torch.load(path / NET_FILE, weights_only=True, map_location=self.device)
        config = json.loads(saved["config"])
        text = config.pop("text")
        config = MultimodalConfig(**config, text=HashedTextConfig(**text) if text else None)
        tail = None
        if config.image_dim:
            tail = EffNetTail(load_pretrained_effnet(self.params.variant), self.effnet_config)
        self.net = MultimodalNet(config, tail).to(self.device)
        self.net.load_state_dict(saved["state_dict"])
        self.net.eval()
        self.temperature = float(saved["temperature"])
        if (path / TFIDF_DIR).is_dir():
            self.tfidf = TfidfLinearClassifier.load(path / TFIDF_DIR)  # type: ignore[assignment]
        if (path / PHOTO_MEMBER_FILE).is_file():
            self.photo_member = joblib.load(path / PHOTO_MEMBER_FILE)


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
