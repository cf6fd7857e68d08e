"""The reference a model is watched against, built when it is trained and saved in its folder
(so every registered version carries its own): input features of its training products, the
class prior, its predictions and confidence on validation, and a sample of its embeddings."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from prodclass.models.base import NoEmbeddingError, ProductClassifier
from prodclass.monitoring.features import product_features
from prodclass.serving.similarity import unit_rows

log = logging.getLogger(__name__)

REFERENCE_DIR = "reference"


@dataclass
class ReferenceProfile:
    features: pd.DataFrame  # product_features of (a sample of) the training products
    class_prior: dict[int, float]  # share of each code in the training labels
    predicted: dict[int, float]  # share of each predicted code on validation
    confidences: list[float]  # top probability of each validation prediction
    # modality -> unit rows of a sample of validation products
    embeddings: dict[str, Any] = field(default_factory=dict)

    # ---- files --------------------------------------------------------------------------
    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        self.features.to_csv(folder / "features.csv", index=False)
        summary = {
            "class_prior": {str(k): v for k, v in self.class_prior.items()},
            "predicted": {str(k): v for k, v in self.predicted.items()},
            "confidences": self.confidences,
            "embeddings": sorted(self.embeddings),
        }
        (folder / "profile.json").write_text(json.dumps(summary) + "\n")
        for modality, matrix in self.embeddings.items():
            if sparse.issparse(matrix):
                sparse.save_npz(folder / f"embeddings_{modality}.npz", sparse.csr_matrix(matrix))
            else:
                np.save(folder / f"embeddings_{modality}.npy", np.asarray(matrix, np.float32))
        return folder

    @classmethod
    def load(cls, folder: Path) -> ReferenceProfile:
        summary = json.loads((folder / "profile.json").read_text())
        embeddings: dict[str, Any] = {}
        for modality in summary["embeddings"]:
            npz = folder / f"embeddings_{modality}.npz"
            embeddings[modality] = (
                sparse.load_npz(npz)
                if npz.is_file()
                else np.load(folder / f"embeddings_{modality}.npy")
            )
        return cls(
            features=pd.read_csv(folder / "features.csv"),
            class_prior={int(k): v for k, v in summary["class_prior"].items()},
            predicted={int(k): v for k, v in summary["predicted"].items()},
            confidences=summary["confidences"],
            embeddings=embeddings,
        )


def embedding_sample(model: ProductClassifier, products: pd.DataFrame, n: int, seed: int) -> dict:
    """Unit embeddings of up to ``n`` products that have each modality."""
    try:
        out = {}
        for modality, column in (("text", "text"), ("image", "image_path")):
            having = products[products[column].fillna("") != ""]
            if having.empty:
                continue
            rows = having.sample(min(n, len(having)), random_state=seed)
            frame = rows[["text", "image_path"]].reset_index(drop=True)
            # each modality alone: the embedding of a photo must not depend on the title
            frame = frame.assign(image_path="") if modality == "text" else frame.assign(text="")
            vectors = model.embed(frame)
            if modality in vectors:
                out[modality] = unit_rows(vectors[modality])[0]
        return out
    except NoEmbeddingError:
        return {}


def _embedding_rows(val: pd.DataFrame, train: pd.DataFrame, enough: int = 100) -> pd.DataFrame:
    """Validation products, not training ones: the fit shapes the embeddings of the products
    the model learnt from (a TF-IDF knows all their words), never production's. Only when
    validation is too small to describe a modality (tiny data sets) is it topped up with
    training products."""
    rows = [val]
    for column in ("text", "image_path"):
        if (val[column].fillna("") != "").sum() < enough:
            rows.append(train[train[column].fillna("") != ""])
    combined = pd.concat(rows)
    return combined[~combined.index.duplicated()]  # a product counted once


def build_reference(
    model: ProductClassifier,
    train: pd.DataFrame,
    val: pd.DataFrame,
    max_rows: int = 2000,
    max_embeddings: int = 300,
    seed: int = 42,
    answers: tuple[np.ndarray, np.ndarray] | None = None,
) -> ReferenceProfile:
    """``answers``: (probabilities, classes) of the ``val`` rows from models that never saw
    them (out-of-fold predictions); without it the model answers them itself. A model refitted
    on every label has seen every row, and its own answers there are surer than on new
    products: the confidence test would then alarm on any honest stream."""
    sample = train.sample(min(max_rows, len(train)), random_state=seed)
    labels = train["label"].astype(int)
    if answers is None:
        proba = model.predict_proba(val[["text", "image_path"]].reset_index(drop=True))
        classes = model.classes_
    else:
        proba, classes = answers
    predicted = pd.Series(classes[proba.argmax(axis=1)]).value_counts(normalize=True)
    return ReferenceProfile(
        features=product_features(sample).reset_index(drop=True),
        class_prior={int(k): float(v) for k, v in labels.value_counts(normalize=True).items()},
        predicted={int(k): float(v) for k, v in predicted.items()},
        confidences=[round(float(c), 6) for c in proba.max(axis=1)],
        embeddings=embedding_sample(model, _embedding_rows(val, train), max_embeddings, seed),
    )
