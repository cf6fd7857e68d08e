"""Family `late-fusion`: a text member and a photo member, each strong alone, fused late.

    words (title + description [+ OCR]) ─► TF-IDF word[+char] n-grams [+ word vectors]
                                             ─► linear SVM ─► scores / T_text ─┐
    photo ─► frozen EfficientNet-Lite ─► pooled features [mean of orig+hflip]   ├─► fusion
                                             ─► PyTorch logistic regression ────┘  / T_fused

A product with only text gets the text member's answer, only a photo the photo member's, both
the fusion (``fusion.py``: one weight or a stacker, fitted on out-of-fold answers of an inner
K-fold over the training rows). Why this shape: on the hidden catalogue products, these two
simple members fused by a CV-chosen weight beat a fine-tuned fused network, at a fraction of its
training time and serving cost. Every extra is a switch, so the ablation can price it:
``variant``, ``tta``, ``ocr``, ``text_ngrams``, ``word_vectors``, ``fusion``, ``class_weight``,
``pseudo_labels``.

Calibration: the text member's scores and the photo member's logits get one temperature each,
fitted on their out-of-fold answers; the fusion gets its own (per route: title + photo, or
words read on the photo + photo).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Literal

import joblib
import numpy as np
import pandas as pd
import torch
from pydantic import Field
from scipy import sparse
from sklearn.model_selection import StratifiedKFold

from prodclass.models.base import FamilyParams, ProductClassifier
from prodclass.models.calibration import fit_temperature
from prodclass.models.class_weights import (
    CATALOGUE_FILE,
    ClassWeight,
    catalogue_shares,
    row_weights,
)
from prodclass.models.feature_cache import ActivationStore, FeatureCache
from prodclass.models.fusion import Fusion, fit_stacked, fit_weighted, log_softmax
from prodclass.models.linear_softmax import LinearSoftmax, fit_linear_softmax
from prodclass.models.photo_features import FrozenPhotoEncoder
from prodclass.models.product_words import ocr_words
from prodclass.models.tfidf_linear import (
    TfidfLinearParams,
    build_features,
    documents,
    linear_classifier,
    product_titles,
)
from prodclass.settings import get_settings
from prodclass.timing import stopwatch

log = logging.getLogger(__name__)

TEXT_MEMBER_FILE = "text_member.joblib"
TORCH_FILE = "late_fusion.pt"  # photo member + fusion state_dicts, temperatures, prior
# routes of a product with a photo and words: its own text, or only words read on the photo
FUSED_ROUTES = ("both", "ocr")
MIN_FUSION_ROWS = 20  # fewer out-of-fold rows: fixed weight 0.5, temperature 1


class LateFusionParams(FamilyParams):
    variant: Literal["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"] = (
        "efficientnet-lite0"
    )
    use_text: bool = True  # False: the photo member alone (products without a photo: prior)
    tta: bool = False  # photo features: mean of the original and the mirrored photo
    ocr: Literal["off", "photo_only", "all"] = "off"  # which photos Tesseract reads
    text_ngrams: Literal["word", "word+char"] = "word+char"
    word_vectors: bool = False  # append the mean fr_core_news_md vector to the text features
    title_weight: float = Field(0.0, ge=0)  # > 0: the title's own n-grams, scaled (tfidf_linear)
    fusion: Literal["weighted", "stacked"] = "weighted"
    fusion_folds: int = Field(3, ge=2)  # inner K-fold giving the out-of-fold member answers
    class_weight: ClassWeight = "balanced"
    pseudo_labels: bool = False  # refit once with confident unlabelled products added
    pseudo_threshold: float = Field(0.9, gt=0, lt=1)
    photo_C: float = Field(0.1, gt=0)  # inverse L2 strength of the photo member (the stacker's
    # is chosen by CV, fusion.py)
    tfidf: dict[str, Any] = {}  # TfidfLinearParams of the text member (C, n-gram ranges, ...)
    threads: int = Field(2, ge=1)
    seed: int = 42


class LateFusionClassifier(ProductClassifier):
    family = "late-fusion"
    Params = LateFusionParams
    params: LateFusionParams

    def __init__(self, params: LateFusionParams, classes: list[int] | None = None) -> None:
        super().__init__(params, classes)
        self.text_params = TfidfLinearParams(
            **(
                params.tfidf
                | {
                    "analyzers": params.text_ngrams,
                    "word_vectors": params.word_vectors,
                    "title_weight": params.title_weight,
                }
            )
        )
        self.encoder = FrozenPhotoEncoder(params.variant)
        self.text_features: Any = None  # fitted FeatureUnion
        self.text_svm: Any = None  # fitted LinearSVC
        self.photo_member: LinearSoftmax | None = None
        self.fusions: dict[str, Fusion] = {}
        self.temperatures = {"text": 1.0, "image": 1.0}
        self.log_prior = np.zeros(0, np.float32)  # answer for a product with no input
        self.cache: FeatureCache | None = None  # None: the one under settings.state_dir
        self.ocr_cache_dir: Path | None = None  # None: state_dir/ocr-cache

    # ---- inputs -------------------------------------------------------------------------
    def _text(self, products: pd.DataFrame) -> list[str]:
        """Title + description ('' for every product when the text member is off)."""
        if not self.params.use_text:
            return [""] * len(products)
        return [str(t) for t in products["text"]]

    def _titles(self, products: pd.DataFrame) -> list[str]:
        """Cleaned titles ('' when the frame has none or the text member is off)."""
        titles = product_titles(products) if self.params.use_text else None
        return titles if titles is not None else [""] * len(products)

    def _documents(
        self, products: pd.DataFrame, words: list[str], rows: np.ndarray
    ) -> pd.DataFrame:
        """What the text member reads for ``rows``: their words and titles."""
        titles = self._titles(products)
        return documents([words[r] for r in rows], [titles[r] for r in rows])

    def _words(self, products: pd.DataFrame) -> list[str]:
        """Title + description, plus the words on the photo where the ``ocr`` switch says."""
        text = self._text(products)
        if not self.params.use_text:
            return text
        photos = [str(p) for p in products["image_path"]]
        mode = self.params.ocr
        if mode == "off":
            return text
        wanted = [p if p and (mode == "all" or not t) else "" for t, p in zip(text, photos)]
        read = ocr_words(wanted, self.ocr_cache_dir)
        return [f"{t} {o}".strip() for t, o in zip(text, read)]

    def _photo_features(self, products: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Which products have a photo, and its (N_photo, D) frozen features (TTA: the mean
        of the original and mirrored views)."""
        has_photo = (products["image_path"] != "").to_numpy()
        if not has_photo.any():
            return has_photo, np.zeros((0, 0), np.float32)
        cache = self.cache or FeatureCache.default()
        paths = [str(p) for p in products["image_path"][has_photo]]
        return has_photo, self.encoder.features(paths, self._views(), cache).mean(axis=1)

    def _views(self) -> tuple[str, ...]:
        """The views of each photo the photo member reads (TTA: the mirrored one too)."""
        return ("orig", "hflip") if self.params.tta else ("orig",)

    def cache_photo_features(self, paths: list[str]) -> ActivationStore:
        return self.encoder.cache(paths, self._views(), self.cache or FeatureCache.default())

    # ---- members' answers ---------------------------------------------------------------
    def _aligned(self, member_classes: np.ndarray, values: np.ndarray, fill: float) -> np.ndarray:
        """(n, C) columns of a member's (n, K) outputs in this model's class order."""
        index = {int(c): i for i, c in enumerate(self.classes_)}
        out = np.full((len(values), len(self.classes_)), fill, dtype=np.float32)
        out[:, [index[int(c)] for c in member_classes]] = values
        return out

    def _svm_scores(self, svm: Any, x: Any) -> np.ndarray:
        scores = svm.decision_function(x)
        if scores.ndim == 1:  # two classes: one signed score
            scores = np.stack([-scores, scores], axis=1)
        return self._aligned(svm.classes_, scores, fill=float(np.min(scores)) - 10.0)

    def _text_logproba(self, docs: pd.DataFrame) -> np.ndarray:
        x = self.text_features.transform(docs)
        return log_softmax(self._svm_scores(self.text_svm, x) / self.temperatures["text"])

    def _photo_logproba(self, features: np.ndarray) -> np.ndarray:
        assert self.photo_member is not None
        return log_softmax(self.photo_member.logits(features) / self.temperatures["image"])

    @staticmethod
    def _routes(text: list[str], words: list[str], has_photo: np.ndarray) -> np.ndarray:
        """Per product: "both", "ocr" (photo + only words read on it), "text", "image", "none"."""
        routes = []
        for t, w, photo in zip(text, words, has_photo):
            if photo and t:
                routes.append("both")
            elif photo and w:
                routes.append("ocr")
            elif photo:
                routes.append("image")
            else:
                routes.append("text" if w else "none")
        return np.asarray(routes, dtype=object)

    # ---- training -----------------------------------------------------------------------
    def _catalogue(self) -> dict[int, float] | None:
        if self.params.class_weight != "catalogue":
            return None
        return catalogue_shares(Path(get_settings().data_dir) / CATALOGUE_FILE)

    def _folds(self, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        k = self.params.fusion_folds
        largest = int(np.bincount(y).max()) if len(y) else 0  # every class below k: no folds
        if len(y) < 2 * k or largest < k:
            return []
        splitter = StratifiedKFold(k, shuffle=True, random_state=self.params.seed)
        with warnings.catch_warnings():  # a class rarer than k lands in fewer folds: fine
            warnings.simplefilter("ignore", UserWarning)
            return list(splitter.split(np.zeros(len(y)), y))

    def _fit_text(self, docs: pd.DataFrame, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Fit the text member on products with words; return their out-of-fold scores."""
        self.text_features = build_features(self.text_params)
        x = self.text_features.fit_transform(docs)
        oof = np.zeros((len(docs), len(self.classes_)), np.float32)
        for train_rows, held_out in self._folds(y):
            svm = linear_classifier(self.text_params, class_weight=None)
            svm.fit(x[train_rows], self.classes_[y[train_rows]], sample_weight=weights[train_rows])
            oof[held_out] = self._svm_scores(svm, x[held_out])
        self.text_svm = linear_classifier(self.text_params, class_weight=None)
        self.text_svm.fit(x, self.classes_[y], sample_weight=weights)
        return oof

    def _fit_photo(self, features: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Fit the photo member on products with a photo; return their out-of-fold logits."""
        n_classes, p = len(self.classes_), self.params
        oof = np.zeros((len(y), n_classes), np.float32)
        for train_rows, held_out in self._folds(y):
            member = fit_linear_softmax(
                features[train_rows], y[train_rows], n_classes, p.photo_C,
                weights[train_rows], seed=p.seed,
            )  # fmt: skip
            oof[held_out] = member.logits(features[held_out])
        self.photo_member = fit_linear_softmax(
            features, y, n_classes, p.photo_C, weights, seed=p.seed
        )
        return oof

    def _fit_once(self, train: pd.DataFrame) -> dict[str, Any]:
        p = self.params
        labels = train["label"].astype(int).to_numpy()
        self.classes_ = np.asarray(sorted(set(labels.tolist())), np.int64)
        y = np.searchsorted(self.classes_, labels)
        self.log_prior = np.log(np.bincount(y, minlength=len(self.classes_)) / len(y)).astype(
            np.float32
        )
        catalogue = self._catalogue()
        text = self._text(train)
        words = self._words(train)
        has_photo, features = self._photo_features(train)
        routes = self._routes(text, words, has_photo)
        has_words = np.asarray([bool(w) for w in words])
        if (p.use_text and not has_words.any()) or not has_photo.any():
            raise ValueError("late-fusion needs training products with words and with a photo")

        word_rows = np.flatnonzero(has_words)
        oof_text = np.zeros((len(train), len(self.classes_)), np.float32)
        if p.use_text:
            w_text = row_weights(labels[word_rows], p.class_weight, catalogue)
            docs = self._documents(train, words, word_rows)
            oof_text[word_rows] = self._fit_text(docs, y[word_rows], w_text)
        photo_rows = np.flatnonzero(has_photo)
        w_photo = row_weights(labels[photo_rows], p.class_weight, catalogue)
        oof_photo = np.zeros_like(oof_text)
        oof_photo[photo_rows] = self._fit_photo(features, y[photo_rows], w_photo)

        scored = np.zeros(len(train), bool)  # rows the inner K-fold gave an answer
        scored[word_rows] = oof_text[word_rows].any(axis=1)
        scored_photo = np.zeros(len(train), bool)
        scored_photo[photo_rows] = oof_photo[photo_rows].any(axis=1)
        if scored.sum() >= MIN_FUSION_ROWS:
            self.temperatures["text"] = fit_temperature(oof_text[scored], y[scored])
        if scored_photo.sum() >= MIN_FUSION_ROWS:
            self.temperatures["image"] = fit_temperature(oof_photo[scored_photo], y[scored_photo])

        facts: dict[str, Any] = {"n_train_rows": len(train)}
        self.fusions = {}
        for route in FUSED_ROUTES:
            rows = np.flatnonzero((routes == route) & scored & scored_photo)
            facts[f"n_fusion_rows_{route}"] = len(rows)
            if len(rows) < MIN_FUSION_ROWS or len(set(y[rows].tolist())) < 2:
                self.fusions[route] = Fusion(p.fusion)
                continue
            t = log_softmax(oof_text[rows] / self.temperatures["text"])
            i = log_softmax(oof_photo[rows] / self.temperatures["image"])
            if p.fusion == "stacked":
                weights = row_weights(labels[rows], p.class_weight, catalogue)
                self.fusions[route] = fit_stacked(t, i, y[rows], weights, p.seed)
            else:
                self.fusions[route] = fit_weighted(t, i, y[rows])
            facts[f"fusion_weight_{route}"] = self.fusions[route].weight
            facts[f"temperature_{route}"] = self.fusions[route].temperature
        facts |= {f"temperature_{k}": v for k, v in self.temperatures.items()}
        facts |= {f"n_{r}_rows": int((routes == r).sum()) for r in ("text", "image")}
        return facts

    def fit(self, train: pd.DataFrame, val: pd.DataFrame | None = None) -> dict[str, Any]:
        """Fit on ``train`` (``val`` is not needed: the inner K-fold calibrates and fuses)."""
        p = self.params
        torch.set_num_threads(p.threads)
        with stopwatch() as fit_time:
            facts = self._fit_once(train)
            if p.pseudo_labels:
                extra = self._pseudo_labelled()
                facts["n_pseudo_labels"] = len(extra)
                if len(extra):
                    more = self._fit_once(pd.concat([train, extra]))
                    facts = more | {"n_pseudo_labels": len(extra)}
        facts["fit_seconds"] = round(fit_time.seconds, 2)
        return facts

    def _pseudo_labelled(self) -> pd.DataFrame:
        """Unlabelled products of the data folder (X_test_update.csv) the first fit is sure
        of (top probability >= ``pseudo_threshold``), labelled with its answer."""
        from prodclass.data.unlabelled import unlabelled_products

        products = unlabelled_products(Path(get_settings().data_dir))
        if products.empty:
            return products
        proba = self.predict_proba(products)
        sure = proba.max(axis=1) >= self.params.pseudo_threshold
        chosen = products[sure].copy()
        chosen["label"] = self.classes_[proba[sure].argmax(axis=1)]
        log.info("pseudo-labels: %d of %d unlabelled products", len(chosen), len(products))
        return chosen

    # ---- inference ----------------------------------------------------------------------
    def _require_trained(self) -> None:
        if self.photo_member is None or (self.params.use_text and self.text_svm is None):
            raise RuntimeError("model is not trained")

    def predict_proba(self, products: pd.DataFrame) -> np.ndarray:
        self._require_trained()
        torch.set_num_threads(self.predict_threads)
        text = self._text(products)
        has_photo, features = self._photo_features(products)
        words = self._words(products)
        routes = self._routes(text, words, has_photo)
        out = np.tile(self.log_prior, (len(products), 1))
        word_rows = np.flatnonzero(routes != "image") if len(products) else np.zeros(0, int)
        word_rows = word_rows[routes[word_rows] != "none"]
        text_lp = np.zeros_like(out)
        if len(word_rows):
            text_lp[word_rows] = self._text_logproba(self._documents(products, words, word_rows))
        photo_lp = np.zeros_like(out)
        if has_photo.any():
            photo_lp[has_photo] = self._photo_logproba(features)
        out[routes == "text"] = text_lp[routes == "text"]
        out[routes == "image"] = photo_lp[routes == "image"]
        for route in FUSED_ROUTES:
            rows = routes == route
            if rows.any():
                out[rows] = log_softmax(self.fusions[route].logits(text_lp[rows], photo_lp[rows]))
        proba = np.exp(out - out.max(axis=1, keepdims=True))
        return proba / proba.sum(axis=1, keepdims=True)

    def embed(self, products: pd.DataFrame) -> dict[str, Any]:
        """Text: the TF-IDF row of the title + description (sparse); image: the frozen pooled
        photo features the photo member reads. Zero rows where the product lacks the input."""
        self._require_trained()
        torch.set_num_threads(self.predict_threads)
        assert self.photo_member is not None
        out: dict[str, Any] = {}
        if self.params.use_text:
            texts = self._text(products)
            docs = self._documents(products, texts, np.arange(len(products)))
            out["text"] = sparse.csr_matrix(self.text_features.transform(docs))
        has_photo, features = self._photo_features(products)
        image = np.zeros((len(products), self.photo_member.linear.in_features), np.float32)
        if has_photo.any():
            image[has_photo] = features
        return out | {"image": image}

    # ---- artefact -----------------------------------------------------------------------
    def _save_files(self, path: Path) -> None:
        self._require_trained()
        assert self.photo_member is not None
        if self.params.use_text:
            joblib.dump(
                {"features": self.text_features, "svm": self.text_svm},
                path / TEXT_MEMBER_FILE,
                compress=3,
            )
        fusions = {
            route: {
                "kind": f.kind,
                "weight": f.weight,
                "temperature": f.temperature,
                "stacker": f.stacker.state_dict() if f.stacker is not None else None,
            }
            for route, f in self.fusions.items()
        }
        torch.save(
            {
                "photo_member": self.photo_member.state_dict(),
                "photo_dim": self.photo_member.linear.in_features,
                "fusions": fusions,
                "temperatures": self.temperatures,
                "log_prior": torch.from_numpy(self.log_prior),
                "encoder": self.params.variant,
            },
            path / TORCH_FILE,
        )

    def _load_files(self, path: Path) -> None:
        if self.params.use_text:
            text = joblib.load(path / TEXT_MEMBER_FILE)
            self.text_features, self.text_svm = text["features"], text["svm"]
        saved = torch.load(path / TORCH_FILE, weights_only=True)
        n_classes = len(self.classes_)
        self.photo_member = LinearSoftmax(int(saved["photo_dim"]), n_classes)
        self.photo_member.load_state_dict(saved["photo_member"])
        self.photo_member.eval()
        self.fusions = {}
        for route, f in saved["fusions"].items():
            stacker = None
            if f["stacker"] is not None:
                stacker = LinearSoftmax(2 * n_classes, n_classes)
                stacker.load_state_dict(f["stacker"])
                stacker.eval()
            self.fusions[route] = Fusion(f["kind"], f["weight"], stacker, f["temperature"])
        self.temperatures = {k: float(v) for k, v in saved["temperatures"].items()}
        self.log_prior = saved["log_prior"].numpy()
