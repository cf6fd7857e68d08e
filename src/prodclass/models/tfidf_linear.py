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
        p = self.params
        features = FeatureUnion(
            [
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
                ),
                (
                    "char",
                    TfidfVectorizer(
                        analyzer="char_wb",
                        ngram_range=(p.char_ngram_min, p.char_ngram_max),
                        sublinear_tf=True,
                        min_df=p.min_df,
                        max_features=p.max_features_char,
                    ),
                ),
            ]
        )
        if p.classifier == "logreg":
            clf: Any = LogisticRegression(
                C=p.C, class_weight=p.class_weight, max_iter=2000, random_state=p.seed
            )
        else:
            clf = CalibratedClassifierCV(
                LinearSVC(C=p.C, class_weight=p.class_weight, random_state=p.seed),
                method="sigmoid",
                cv=p.calibration_folds,
            )
        return Pipeline([("tfidf", features), ("clf", clf)])

    def fit(self, train: pd.DataFrame, val: pd.DataFrame | None = None) -> dict[str, Any]:
        # Only products with text teach a text model: an empty string would otherwise learn
        # "no text means the majority class of image-only rows", an artefact of the data.
        rows = train[train["text"].str.len() > 0]
        if rows.empty:
            raise ValueError("tfidf-linear needs products with text; the training set has none")
        self.pipeline = self._build()
        self.pipeline.fit(rows["text"].tolist(), rows["label"].astype(int).to_numpy())
        self.classes_ = np.asarray(self.pipeline.classes_, dtype=np.int64)
        vocab = self.pipeline.named_steps["tfidf"].transformer_list
        return {
            "n_train_text_rows": len(rows),
            "n_features": int(sum(len(v.vocabulary_) for _, v in vocab)),
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
