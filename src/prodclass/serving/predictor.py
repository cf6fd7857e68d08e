"""The one predictor: raw product fields in, top-k categories out.

The API, batch jobs, the UI (through the API) and the Azure ML scoring script all predict
through ``Predictor``, so input checks, text cleaning and the answer's shape are the same
everywhere. A model is loaded once per predictor; a new version means a new predictor (the API
swaps them atomically).

Photos arrive as bytes. They are decoded once with the safe decoder (size and pixel limits,
truncated or non-image bytes refused with a reason) and handed to the model as temporary files
that live for the call, because families read ``image_path`` (their caches key photos by
content, not by path).
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from prodclass.data.images import ImageError, open_image
from prodclass.data.taxonomy import category, is_known
from prodclass.data.text import clean_text, product_text
from prodclass.models.base import NoSharedSpaceError, ProductClassifier


class InvalidProductError(ValueError):
    """A product that cannot be classified; the message says why (a client error, not ours)."""


@dataclass(frozen=True)
class ProductInput:
    """What a client sends for one product: a title, a description, a photo; any may be empty,
    but not all of them."""

    designation: str = ""
    description: str = ""
    image: bytes | None = None
    product_id: str | None = None


def product_inputs(raw: pd.DataFrame) -> list[ProductInput]:
    """Products from a frame of raw fields (``designation``, ``description``, ``image``: a photo
    file path, may be empty; missing columns count as empty), photos read as bytes so that
    they are checked like uploads. A photo path that cannot be read is an
    InvalidProductError naming the product."""
    n = len(raw)

    def column(name: str) -> list[Any]:
        return list(raw[name]) if name in raw else [""] * n

    def text(value: Any) -> str:
        return value if isinstance(value, str) else ""

    products = []
    for position, (designation, description, image, product_id) in enumerate(
        zip(column("designation"), column("description"), column("image"), column("productid"))
    ):
        photo = None
        if text(image):
            try:
                photo = Path(image).read_bytes()
            except OSError as exc:
                raise InvalidProductError(
                    f"product {position}: photo {image!r} cannot be read ({exc.strerror})"
                ) from exc
        products.append(
            ProductInput(text(designation), text(description), photo, text(product_id) or None)
        )
    return products


@dataclass(frozen=True)
class CategoryScore:
    prdtypecode: int
    name_fr: str
    name_en: str
    probability: float


@dataclass(frozen=True)
class Embedding:
    """One product's vector for one modality, in the serving model's own space."""

    modality: str  # "text" or "image"
    dimension: int
    values: list[float]  # the whole vector, or its non-zero values when ``indices`` is set
    indices: list[int] | None  # sparse vectors (TF-IDF): the positions of ``values``
    shared_space: bool  # comparable with the other modality's vectors of this model


@dataclass(frozen=True)
class ModelIdentity:
    """The model that answered when another process did: a scoring endpoint names its model
    in every answer (two deployments may share its traffic)."""

    model_uri: str
    model_version: str | None
    family: str
    model_name: str | None = None


@dataclass(frozen=True)
class Prediction:
    top: list[CategoryScore]  # best first
    inputs: str  # "text", "image" or "text+image": what the model had to go on
    image_sha256: str | None = None
    product_id: str | None = None
    embeddings: list[Embedding] | None = None  # asked for: one per modality the product has
    served_by: ModelIdentity | None = None  # set when a scoring endpoint answered

    @property
    def prdtypecode(self) -> int:
        return self.top[0].prdtypecode


def check_product(
    product: ProductInput, position: int, max_image_bytes: int
) -> tuple[str, str | None]:
    """The product's cleaned text and photo hash; InvalidProductError says why a product
    cannot be classified (nothing to go on, photo too big, not an image, truncated...). Every
    predictor checks with it, local or remote, so a product is refused the same way."""
    text = product_text(product.designation or "", product.description or "")
    sha = None
    if product.image:
        image = product.image
        if len(image) > max_image_bytes:
            raise InvalidProductError(
                f"product {position}: photo of {len(image)} bytes is over the "
                f"{max_image_bytes}-byte limit"
            )
        try:
            open_image(image)
        except ImageError as exc:
            raise InvalidProductError(f"product {position}: photo refused: {exc}") from exc
        sha = hashlib.sha256(image).hexdigest()
    if not text and sha is None:
        raise InvalidProductError(
            f"product {position}: no title, no description and no photo to classify"
        )
    return text, sha


@dataclass
class Predictor:
    """A loaded model and where it came from (``model_uri``, ``model_version`` for logs;
    ``model_dir`` the local folder it was read from, ``source`` "registry" or "cache" when it
    is the API's local copy, see ``model_cache.py``)."""

    model: ProductClassifier
    model_uri: str
    model_version: str | None = None
    max_image_bytes: int = 10 * 1024 * 1024
    model_dir: Path | None = None
    source: str = "registry"
    model_name: str | None = None  # unset: the API's registered model name

    @classmethod
    def load(cls, model_uri: str, **options: int) -> Predictor:
        """Load ``model_uri`` (a folder, ``runs:/…``, ``models:/name@alias`` or ``/version``)."""
        from prodclass.registry.model_registry import model_folder, resolve_version

        folder = model_folder(model_uri)
        return cls.load_folder(folder, model_uri, resolve_version(model_uri), "registry", **options)

    @classmethod
    def load_folder(
        cls, folder: Path, model_uri: str, version: str | None, source: str, **options: int
    ) -> Predictor:
        """A predictor of a local model folder standing for ``model_uri`` (the cached copy)."""
        from prodclass.models.registry import load_model_dir
        from prodclass.settings import get_settings

        # onto PRODCLASS_DEVICE (auto: the GPU when there is one), whatever device saved it
        model = load_model_dir(folder, device=get_settings().device)
        return cls(model, model_uri, version, model_dir=folder, source=source, **options)

    @property
    def family(self) -> str:
        return self.model.family

    def predict(
        self, products: Sequence[ProductInput], top_k: int = 5, embed: bool = False
    ) -> list[Prediction]:
        """Top-k categories of each product, in order, and with ``embed`` its vectors (one
        per modality it has; NoEmbeddingError for a family without a space); InvalidProductError
        names the first product that cannot be classified (by position) and why."""
        if not products:
            return []
        top_k = max(1, min(top_k, len(self.model.classes_)))
        with self._model_frame(products) as (rows, hashes):
            probabilities = self.model.predict_proba(rows)  # (N, C)
            vectors = self.model.embed(rows) if embed else None  # photos read while they exist
        order = np.argsort(-probabilities, axis=1)[:, :top_k]
        out = []
        for i, product in enumerate(products):
            top = [self._score(int(self.model.classes_[j]), probabilities[i, j]) for j in order[i]]
            given = (("text", rows.at[i, "text"]), ("image", rows.at[i, "image_path"]))
            kinds = [kind for kind, value in given if value]
            embeddings = self._embeddings(vectors, i, kinds) if vectors is not None else None
            out.append(Prediction(top, "+".join(kinds), hashes[i], product.product_id, embeddings))
        return out

    def embed(self, products: Sequence[ProductInput]) -> dict[str, Any]:
        """The products in the model's representation space, per modality (see
        ``ProductClassifier.embed``); checked like predictions."""
        with self._model_frame(products) as (rows, _):
            return self.model.embed(rows)

    def readiness_problem(self) -> str | None:
        """Always None: a loaded model passed its smoke prediction (a scoring endpoint's
        predictor asks the endpoint)."""
        return None

    def shared_space_problem(self) -> str | None:
        """Why the model cannot search photos by a phrase, or None when it can."""
        return self.model.shared_space_problem()

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) vectors of search phrases, cleaned like product text, in the space of the
        model's photo vectors. NoSharedSpaceError (a 409) says why a model has no such space;
        InvalidProductError names a phrase without a word to search by."""
        if problem := self.shared_space_problem():
            raise NoSharedSpaceError(problem)
        cleaned = [product_text(text, "") for text in texts]
        for position, text in enumerate(cleaned):
            if not text:
                raise InvalidProductError(f"search text {position} has no words to search by")
        return self.model.embed_texts(cleaned)

    def _embeddings(self, vectors: dict[str, Any], row: int, kinds: list[str]) -> list[Embedding]:
        """Row ``row`` of each modality's matrix the product has an input for, as lists."""
        shared = self.shared_space_problem() is None
        out = []
        for modality in ("text", "image"):
            if modality not in vectors or modality not in kinds:
                continue
            matrix = vectors[modality]
            if sparse.issparse(matrix):
                one = sparse.csr_matrix(matrix[row])
                one.sort_indices()
                values, indices = one.data.astype(float).tolist(), one.indices.tolist()
            else:
                values, indices = np.asarray(matrix[row], dtype=float).tolist(), None
            out.append(Embedding(modality, int(matrix.shape[1]), values, indices, shared))
        return out

    @contextmanager
    def _model_frame(
        self, products: Sequence[ProductInput]
    ) -> Iterator[tuple[pd.DataFrame, list[str | None]]]:
        """The frame models read (cleaned ``text``, ``image_path`` of a temporary copy of the
        photo, valid inside the block) and each photo's hash."""
        rows, hashes = [], []
        with tempfile.TemporaryDirectory(prefix="prodclass-photos-") as tmp:
            for position, product in enumerate(products):
                text, sha = self.check(product, position)
                path = self._store(product.image, sha, Path(tmp))
                title = clean_text(product.designation or "")
                rows.append({"text": text, "title": title, "image_path": path})
                hashes.append(sha)
            yield pd.DataFrame(rows, columns=["text", "title", "image_path"]), hashes

    def check(self, product: ProductInput, position: int = 0) -> tuple[str, str | None]:
        """The product's cleaned text and photo hash (see ``check_product``)."""
        return check_product(product, position, self.max_image_bytes)

    @staticmethod
    def _store(image: bytes | None, sha: str | None, folder: Path) -> str:
        """Write a checked photo where the model reads it; "" when there is none."""
        if not image or sha is None:
            return ""
        path = folder / f"{sha}.img"
        if not path.exists():
            path.write_bytes(image)
        return str(path)

    @staticmethod
    def _score(code: int, probability: float) -> CategoryScore:
        p = round(float(probability), 6)
        if is_known(code):
            c = category(code)
            return CategoryScore(code, c.name_fr, c.name_en, p)
        return CategoryScore(code, "", "", p)
