"""Text baseline: TF-IDF over word and character n-grams, then a linear classifier.

Character n-grams survive the glued words and typos of merchant text; word bigrams keep
phrases such as "carte pokemon". The title can get n-gram features of its own beside those of
the whole text (``title_weight``): a word in the title says more about the product type than
the same word deep in a description. Probabilities come from the classifier (logistic
regression) or from a sigmoid calibration of a linear SVM.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import joblib
import numpy as np
import pandas as pd
from pydantic import Field
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC

from prodclass.models.base import FamilyParams, ProductClassifier

PIPELINE_FILE = "pipeline.joblib"


class TfidfLinearParams(FamilyParams):
    analyzers: Literal["word", "word+char"] = "word+char"  # word n-grams, plus char n-grams
    word_vectors: bool = False  # append the mean fr_core_news_md word vector (word_vectors.py)
    word_ngram_max: int = 2
    char_ngram_min: int = 2
    char_ngram_max: int = 5
    max_features_word: int = 200_000
    max_features_char: int = 300_000
    min_df: int = 1
    title_weight: float = Field(0.0, ge=0)  # > 0: the title's own word + char n-grams, scaled
    classifier: Literal["linear_svc", "logreg"] = "linear_svc"
    C: float = 0.5
    class_weight: Literal["balanced"] | None = "balanced"
    calibration_folds: int = 3
    seed: int = 42


class TfidfLinearClassifier(ProductClassifier):
    family = "tfidf-linear"
    Params = TfidfLinearParams
    params: TfidfLinearParams

    def __init__(self, params: TfidfLinearParams, classes: list[int] | None = None) -> None:
        super().__init__(params, classes)
        self.pipeline: Pipeline | None = None

    def _build(self) -> Pipeline:
        return Pipeline([("tfidf", build_features(self.params)), ("clf", self._classifier())])

    def _classifier(self) -> Any:
        p = self.params
        if p.classifier == "logreg":
            return LogisticRegression(
                C=p.C, class_weight=p.class_weight, max_iter=2000, random_state=p.seed
            )
        return CalibratedClassifierCV(
            linear_classifier(p), method="sigmoid", cv=p.calibration_folds
        )

    def fit(self, train: pd.DataFrame, val: pd.DataFrame | None = None) -> dict[str, Any]:
        # Only products with text teach a text model: an empty string would otherwise learn
        # "no text means the majority class of image-only rows", an artefact of the data.
        rows = train[train["text"].str.len() > 0]
        if rows.empty:
            raise ValueError("tfidf-linear needs products with text; the training set has none")
        self.pipeline = self._build()
        # an optional ``weight`` column: per-product sample weights (e.g. a class-mix prior)
        weights = {"clf__sample_weight": rows["weight"].to_numpy()} if "weight" in rows else {}
        labels = rows["label"].astype(int).to_numpy()
        self.pipeline.fit(documents(rows["text"], product_titles(rows)), labels, **weights)
        self.classes_ = np.asarray(self.pipeline.classes_, dtype=np.int64)
        return {
            "n_train_text_rows": len(rows),
            "n_features": feature_count(self.pipeline.named_steps["tfidf"]),
        }

    def predict_proba(self, products: pd.DataFrame) -> np.ndarray:
        if self.pipeline is None:
            raise RuntimeError("model is not trained")
        return self.pipeline.predict_proba(_documents_of(products))

    def embed(self, products: pd.DataFrame) -> dict[str, Any]:
        """Text: the TF-IDF vector (sparse) the linear model reads."""
        if self.pipeline is None:
            raise RuntimeError("model is not trained")
        return {"text": self.pipeline.named_steps["tfidf"].transform(_documents_of(products))}

    def _save_files(self, path: Path) -> None:
        joblib.dump(self.pipeline, path / PIPELINE_FILE, compress=3)

    def _load_files(self, path: Path) -> None:
        self.pipeline = joblib.load(path / PIPELINE_FILE)


def documents(words: Sequence[str], titles: Sequence[str] | None = None) -> pd.DataFrame:
    """What the text features read: each product's words and, apart, its title."""
    words = ["" if w is None else str(w) for w in words]
    titles = [str(t) for t in titles] if titles is not None else [""] * len(words)
    return pd.DataFrame({"words": words, "title": titles})


def product_titles(products: pd.DataFrame) -> list[str] | None:
    """The cleaned titles of ``products`` (None for frames that carry none)."""
    return [str(t) for t in products["title"]] if "title" in products else None


def _documents_of(products: pd.DataFrame) -> pd.DataFrame:
    return documents(products["text"].fillna(""), product_titles(products))


def _ngrams(p: TfidfLinearParams, analyzer: str, max_features: int | None) -> TfidfVectorizer:
    if analyzer == "word":
        return TfidfVectorizer(
            analyzer="word",
            ngram_range=(1, p.word_ngram_max),
            sublinear_tf=True,
            min_df=p.min_df,
            max_features=max_features,
            token_pattern=r"(?u)\b\w+\b",
        )
    return TfidfVectorizer(
        analyzer="char_wb",
        ngram_range=(p.char_ngram_min, p.char_ngram_max),
        sublinear_tf=True,
        min_df=p.min_df,
        max_features=max_features,
    )


def build_features(p: TfidfLinearParams) -> ColumnTransformer:
    """The text features of ``documents``: TF-IDF word n-grams and char n-grams
    (``analyzers``) of the words, with ``word_vectors`` the product's mean French word vector,
    and with ``title_weight`` the same n-grams of the title alone; each part L2-normalised."""
    analyzers = ["word", "char"] if p.analyzers == "word+char" else ["word"]
    limits = {"word": p.max_features_word, "char": p.max_features_char}
    parts: list[tuple[str, Any, str]] = [(a, _ngrams(p, a, limits[a]), "words") for a in analyzers]
    if p.word_vectors:
        from prodclass.models.word_vectors import MeanWordVectors  # loads spaCy: only here

        parts.append(("vectors", MeanWordVectors(), "words"))
    weights: dict[str, float] = {}
    if p.title_weight > 0:
        for a in analyzers:
            parts.append((f"title_{a}", _ngrams(p, a, None), "title"))
            weights[f"title_{a}"] = p.title_weight
    return ColumnTransformer(parts, transformer_weights=weights or None, sparse_threshold=1.0)


def linear_classifier(p: TfidfLinearParams, class_weight: Any = "params") -> LinearSVC:
    """The linear SVM of this family (``class_weight`` overrides the params' one)."""
    weight = p.class_weight if class_weight == "params" else class_weight
    return LinearSVC(C=p.C, class_weight=weight, random_state=p.seed)


def feature_count(features: ColumnTransformer) -> int:
    """Width of the fitted text features."""
    return int(
        sum(
            len(t.vocabulary_) if hasattr(t, "vocabulary_") else t.width
            for _, t, _ in features.transformers_
            if hasattr(t, "transform")
        )
    )
