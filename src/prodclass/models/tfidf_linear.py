"""Text baseline: TF-IDF over word and character n-grams, then a linear classifier.

Character n-grams survive the glued words and typos of merchant text; word bigrams keep
phrases such as "carte pokemon". Probabilities come from the classifier (logistic regression)
or from a sigmoid calibration of a linear SVM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import joblib
import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline
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
        self.pipeline.fit(rows["text"].tolist(), rows["label"].astype(int).to_numpy(), **weights)
        self.classes_ = np.asarray(self.pipeline.classes_, dtype=np.int64)
        return {
            "n_train_text_rows": len(rows),
            "n_features": feature_count(self.pipeline.named_steps["tfidf"]),
        }

    def predict_proba(self, products: pd.DataFrame) -> np.ndarray:
        if self.pipeline is None:
            raise RuntimeError("model is not trained")
        return self.pipeline.predict_proba(products["text"].fillna("").tolist())

    def embed(self, products: pd.DataFrame) -> dict[str, Any]:
        """Text: the TF-IDF vector (sparse) the linear model reads."""
        if self.pipeline is None:
            raise RuntimeError("model is not trained")
        texts = products["text"].fillna("").tolist()
        return {"text": self.pipeline.named_steps["tfidf"].transform(texts)}

    def _save_files(self, path: Path) -> None:
        joblib.dump(self.pipeline, path / PIPELINE_FILE, compress=3)

    def _load_files(self, path: Path) -> None:
        self.pipeline = joblib.load(path / PIPELINE_FILE)


def build_features(p: TfidfLinearParams) -> FeatureUnion:
    """The text features: TF-IDF word n-grams, char n-grams (``analyzers``) and, with
    ``word_vectors``, the product's mean French word vector; each part L2-normalised."""
    parts: list[tuple[str, Any]] = [
        (
            "word",
            TfidfVectorizer(
                analyzer="word",
                ngram_range=(1, p.word_ngram_max),
                sublinear_tf=True,
                min_df=p.min_df,
                max_features=p.max_features_word,
                token_pattern=r"(?u)\b\w+\b",
            ),
        )
    ]
    if p.analyzers == "word+char":
        parts.append(
            (
                "char",
                TfidfVectorizer(
                    analyzer="char_wb",
                    ngram_range=(p.char_ngram_min, p.char_ngram_max),
                    sublinear_tf=True,
                    min_df=p.min_df,
                    max_features=p.max_features_char,
                ),
            )
        )
    if p.word_vectors:
        from prodclass.models.word_vectors import MeanWordVectors  # loads spaCy: only here

        parts.append(("vectors", MeanWordVectors()))
    return FeatureUnion(parts)


def linear_classifier(p: TfidfLinearParams, class_weight: Any = "params") -> LinearSVC:
    """The linear SVM of this family (``class_weight`` overrides the params' one)."""
    weight = p.class_weight if class_weight == "params" else class_weight
    return LinearSVC(C=p.C, class_weight=weight, random_state=p.seed)


def feature_count(features: FeatureUnion) -> int:
    """Width of the fitted feature union."""
    return int(
        sum(
            len(t.vocabulary_) if hasattr(t, "vocabulary_") else t.width
            for _, t in features.transformer_list
        )
    )
