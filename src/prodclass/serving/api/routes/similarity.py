"""Similarity: ``POST /predict/similarity`` (two products) and ``/products/similar`` (nearest
products of the labelled catalogue: duplicate and mis-categorised listing hunting)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, UploadFile
from pydantic import BaseModel, ConfigDict, Field

from prodclass.data.taxonomy import category, is_known
from prodclass.serving.api.deps import AnyUser, ServicesDep
from prodclass.serving.api.routes.predict import model_ref, read_upload
from prodclass.serving.api.schemas import ModelRef, ProductIn
from prodclass.serving.api.services import Services
from prodclass.serving.json_products import received
from prodclass.serving.prediction_queue import NoModelError
from prodclass.serving.predictor import InvalidProductError, Predictor, ProductInput
from prodclass.serving.similarity import CatalogueIndex, compare, load_index

router = APIRouter(tags=["similarity"])

Modality = Literal["text", "image", "both"]


class PairIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    a: ProductIn
    b: ProductIn


class SimilarityOut(BaseModel):
    text: float | None = Field(description="Cosine of the texts (None if one has no text).")
    image: float | None = Field(description="Cosine of the photos (None if one has no photo).")
    overall: float | None = Field(description="Mean of the modalities both products have.")
    model: ModelRef


class NeighbourOut(BaseModel):
    row_id: str
    productid: str
    imageid: str
    designation: str
    prdtypecode: int
    name_fr: str
    score: float
    scores: dict[str, float | None]


class SimilarOut(BaseModel):
    model: ModelRef
    neighbours: list[NeighbourOut]


def _predictor(services: Services) -> Predictor:
    predictor = services.slot.current
    if predictor is None:
        raise NoModelError("no model is loaded yet")
    return predictor


def _index(services: Services, predictor: Predictor) -> CatalogueIndex:
    """The serving version's index, loaded once (another version's vectors mean nothing)."""
    key = predictor.model_version or predictor.model_uri
    with services.index_lock:
        if services.similarity_index is None or services.similarity_index.model_key != key:
            services.similarity_index = load_index(services.settings.state_dir, predictor)
        return services.similarity_index


def _input(product: ProductIn, position: int) -> ProductInput:
    problems: list[str] = []
    decoded = received(product, position, problems)
    if problems:
        raise InvalidProductError(problems[0])
    return decoded.input


@router.post("/predict/similarity", response_model=SimilarityOut)
async def similarity(body: PairIn, services: ServicesDep, _: AnyUser) -> SimilarityOut:
    """How alike two products are: cosine in the serving model's embedding space, per
    modality both have, and overall."""
    predictor = _predictor(services)
    a, b = _input(body.a, 0), _input(body.b, 1)
    scores = await asyncio.to_thread(compare, predictor, a, b)
    return SimilarityOut(**scores, model=model_ref(services, predictor))


def _neighbours(rows: list[dict[str, Any]]) -> list[NeighbourOut]:
    out = []
    for row in rows:
        name = category(row["prdtypecode"]).name_fr if is_known(row["prdtypecode"]) else ""
        out.append(NeighbourOut(**row, name_fr=name))
    return out


@router.get("/products/similar", response_model=SimilarOut)
async def similar_products(
    services: ServicesDep,
    _: AnyUser,
    row_id: Annotated[str | None, Query(description="A catalogue product (its row id).")] = None,
    designation: str = "",
    description: str = "",
    k: Annotated[int, Query(ge=1, le=100)] = 10,
    modality: Modality = "both",
) -> SimilarOut:
    """Catalogue products nearest to a catalogue product (``row_id``) or to a title and
    description; compare their categories to spot duplicates and mis-categorised listings."""
    predictor = _predictor(services)
    index = _index(services, predictor)
    if row_id is not None:
        query = index.row_vectors(row_id)
    else:
        query = await asyncio.to_thread(predictor.embed, [ProductInput(designation, description)])
    rows = index.nearest(query, k, modality, exclude=row_id)
    return SimilarOut(model=model_ref(services, predictor), neighbours=_neighbours(rows))


@router.post("/products/similar", response_model=SimilarOut)
async def similar_products_to_upload(
    services: ServicesDep,
    _: AnyUser,
    designation: Annotated[str, Form(max_length=10_000)] = "",
    description: Annotated[str, Form(max_length=100_000)] = "",
    k: Annotated[int, Form(ge=1, le=100)] = 10,
    modality: Annotated[Modality, Form()] = "both",
    image: Annotated[UploadFile | None, File(description="The query photo")] = None,
) -> SimilarOut:
    """Like ``GET /products/similar``, for a query product with a photo."""
    predictor = _predictor(services)
    index = _index(services, predictor)
    photo = await read_upload(image, services.settings.api_max_upload_bytes)
    query = await asyncio.to_thread(
        predictor.embed, [ProductInput(designation, description, photo)]
    )
    rows = index.nearest(query, k, modality)
    return SimilarOut(model=model_ref(services, predictor), neighbours=_neighbours(rows))
