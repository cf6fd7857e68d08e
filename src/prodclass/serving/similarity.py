"""How alike products are, in the serving model's own representation space.

``compare`` scores two products (cosine per modality, text and/or image, and their mean);
``CatalogueIndex`` holds the labelled catalogue's vectors so ``nearest`` finds the products
closest to a query: duplicate listings, and listings whose category disagrees with their
look-alikes'. ``text_query`` turns a phrase into such a query when the model puts texts and
photos in one space, so the catalogue's photos can be searched by words. An index belongs to
one model version (vectors of another model mean nothing); ``prodclass index build`` writes it
under ``state_dir/similarity/``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.preprocessing import normalize

from prodclass.serving.predictor import Predictor, ProductInput

MODALITIES = ("text", "image")
CATALOGUE_COLUMNS = ["productid", "imageid", "designation", "label", "image_path"]


class IndexMissingError(LookupError):
    """No catalogue index was built for the serving model version."""


def unit_rows(matrix: Any) -> tuple[Any, np.ndarray]:
    """Rows scaled to length 1 (zero rows stay zero) and which rows are non-zero."""
    if sparse.issparse(matrix):
        matrix = sparse.csr_matrix(matrix, dtype=np.float32)
        present = np.asarray(matrix.getnnz(axis=1) > 0)
    else:
        matrix = np.asarray(matrix, dtype=np.float32)
        present = np.abs(matrix).sum(axis=1) > 0
    return normalize(matrix), present


def _dot(matrix: Any, query: Any) -> np.ndarray:
    """(N,) cosine of each unit row of ``matrix`` with one unit ``query`` row."""
    out = matrix @ query.T
    return np.asarray(out.todense() if sparse.issparse(out) else out).ravel()


def compare(predictor: Predictor, a: ProductInput, b: ProductInput) -> dict[str, float | None]:
    """Cosine similarity of two products per modality both have, and ``overall`` (their mean)."""
    vectors = predictor.embed([a, b])
    scores: dict[str, float | None] = {}
    for modality in MODALITIES:
        if modality not in vectors:
            scores[modality] = None
            continue
        unit, present = unit_rows(vectors[modality])
        scores[modality] = round(float(_dot(unit[0:1], unit[1:2])[0]), 6) if present.all() else None
    given = [s for s in scores.values() if s is not None]
    scores["overall"] = round(sum(given) / len(given), 6) if given else None
    return scores


def text_query(predictor: Predictor, text: str) -> dict[str, Any]:
    """A phrase as a ``CatalogueIndex.nearest`` query: its vector in the model's shared
    text-photo space stands for both modalities, so it is compared with the catalogue's photos
    ("image"), titles ("text") or both. NoSharedSpaceError when the model has no such space."""
    vector = predictor.embed_texts([text])  # (1, D)
    return {"text": vector, "image": vector}


@dataclass
class CatalogueIndex:
    model_key: str  # the model version (or URI) whose space the vectors are in
    catalogue: pd.DataFrame  # CATALOGUE_COLUMNS, one row per product, index = row id
    vectors: dict[str, Any]  # modality -> unit rows (dense array or CSR matrix)
    present: dict[str, np.ndarray]  # modality -> (N,) bool

    @classmethod
    def build(
        cls, predictor: Predictor, products: pd.DataFrame, batch: int = 256
    ) -> CatalogueIndex:
        """Embed validated labelled products (``text``, ``image_path`` and CATALOGUE_COLUMNS)."""
        parts: dict[str, list[Any]] = {}
        for start in range(0, len(products), batch):
            rows = products.iloc[start : start + batch][["text", "image_path"]].reset_index(
                drop=True
            )
            for modality, matrix in predictor.model.embed(rows).items():
                parts.setdefault(modality, []).append(matrix)
        vectors, present = {}, {}
        for modality, chunks in parts.items():
            stacked = sparse.vstack(chunks) if sparse.issparse(chunks[0]) else np.vstack(chunks)
            vectors[modality], present[modality] = unit_rows(stacked)
        key = predictor.model_version or predictor.model_uri
        catalogue = products[CATALOGUE_COLUMNS].copy()
        # absolute: the API that serves the photos may not run where the index was built from
        paths = catalogue["image_path"]
        catalogue["image_path"] = [str(Path(p).resolve()) if p else "" for p in paths]
        return cls(key, catalogue, vectors, present)

    def nearest(
        self, query: dict[str, Any], k: int = 10, modality: str = "both", exclude: str | None = None
    ) -> list[dict[str, Any]]:
        """The ``k`` catalogue products closest to a query's vectors (one row per modality),
        best first; ``modality`` "text", "image" or "both" (mean of the cosines both have)."""
        used = [m for m in MODALITIES if m in self.vectors and m in query]
        if modality != "both":
            used = [m for m in used if m == modality]
        total = np.zeros(len(self.catalogue), np.float32)
        count = np.zeros(len(self.catalogue), np.float32)
        per_modality: dict[str, np.ndarray] = {}
        for m in used:
            q, q_present = unit_rows(query[m])
            if not q_present[0]:
                continue  # the query has no such modality
            scores = _dot(self.vectors[m], q)
            per_modality[m] = scores
            total += np.where(self.present[m], scores, 0)
            count += self.present[m]
        score = np.where(count > 0, total / np.maximum(count, 1), -np.inf)
        if exclude is not None:
            score[self.catalogue.index == exclude] = -np.inf
        k = min(k, int(np.isfinite(score).sum()))
        best = np.argpartition(-score, k - 1)[:k] if k else np.array([], dtype=int)
        best = best[np.argsort(-score[best])]
        out = []
        for i in best:
            row = self.catalogue.iloc[i]
            out.append(
                {
                    "row_id": str(self.catalogue.index[i]),
                    "productid": row["productid"],
                    "imageid": row["imageid"],
                    "designation": row["designation"],
                    "prdtypecode": int(row["label"]),
                    "score": round(float(score[i]), 6),
                    "scores": {
                        m: round(float(s[i]), 6) if self.present[m][i] else None
                        for m, s in per_modality.items()
                    },
                }
            )
        return out

    def _position(self, row_id: str) -> int:
        positions = np.flatnonzero(self.catalogue.index == row_id)
        if not len(positions):
            raise LookupError(f"no catalogue product with row id {row_id!r}")
        return int(positions[0])

    def row_vectors(self, row_id: str) -> dict[str, Any]:
        """A catalogue product's own vectors (to find its look-alikes)."""
        i = self._position(row_id)
        return {m: v[i : i + 1] for m, v in self.vectors.items() if self.present[m][i]}

    def photo_path(self, row_id: str) -> Path:
        """Where a catalogue product's photo is (search results show it); LookupError says why
        there is none to show."""
        i = self._position(row_id)
        if "image_path" not in self.catalogue:
            raise LookupError(
                "this catalogue index records no photo files: rebuild it with "
                "`prodclass index build --force`"
            )
        path = self.catalogue["image_path"].iloc[i]
        if not path:
            raise LookupError(f"catalogue product {row_id} has no photo")
        if not Path(path).is_file():
            raise LookupError(f"the photo of catalogue product {row_id} is no longer on disk")
        return Path(path)

    # ---- files --------------------------------------------------------------------------
    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        self.catalogue.to_csv(folder / "catalogue.csv")
        for modality, matrix in self.vectors.items():
            if sparse.issparse(matrix):
                sparse.save_npz(folder / f"{modality}.npz", matrix)
            else:
                np.save(folder / f"{modality}.npy", matrix)
            np.save(folder / f"{modality}.present.npy", self.present[modality])
        meta = {"model_key": self.model_key, "modalities": sorted(self.vectors)}
        (folder / "index.json").write_text(json.dumps(meta) + "\n")
        return folder

    @classmethod
    def load(cls, folder: Path) -> CatalogueIndex:
        meta = json.loads((folder / "index.json").read_text())
        catalogue = pd.read_csv(
            folder / "catalogue.csv", index_col=0, dtype=str, keep_default_na=False
        )
        catalogue.index = catalogue.index.astype(str)
        vectors, present = {}, {}
        for modality in meta["modalities"]:
            npz = folder / f"{modality}.npz"
            vectors[modality] = (
                sparse.load_npz(npz) if npz.is_file() else np.load(folder / f"{modality}.npy")
            )
            present[modality] = np.load(folder / f"{modality}.present.npy")
        return cls(meta["model_key"], catalogue, vectors, present)


def index_folder(state_dir: Path, model_key: str) -> Path:
    """Where the index of one model version lives."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_key)
    return state_dir / "similarity" / safe


def load_index(state_dir: Path, predictor: Predictor) -> CatalogueIndex:
    key = predictor.model_version or predictor.model_uri
    folder = index_folder(state_dir, key)
    if not (folder / "index.json").is_file():
        raise IndexMissingError(
            f"no catalogue index for model {key}: run `prodclass index build` "
            f"(with PRODCLASS_MODEL_URI naming this version)"
        )
    return CatalogueIndex.load(folder)
