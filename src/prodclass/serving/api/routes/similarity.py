"""Similarity: ``POST /predict/similarity`` (two products), ``/products/similar`` (nearest
products of the labelled catalogue: duplicate and mis-categorised listing hunting, and photos
searched by a phrase when the model has one text-photo space) and the catalogue's photos."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, HTTPException, Query, Response, UploadFile, status
from pydantic import BaseModel, ConfigDict, Field

from prodclass.data.taxonomy import category, is_known
from prodclass.serving.api.deps import AnyUser, ServicesDep
from prodclass.serving.api.routes.predict import model_ref, read_upload
from prodclass.serving.api.routes.predictions import photo_response
from prodclass.serving.api.schemas import ModelRef, ProductIn
from prodclass.serving.api.services import Services
from prodclass.serving.json_products import received
from prodclass.serving.prediction_queue import NoModelError
from prodclass.serving.predictor import InvalidProductError, Predictor, ProductInput
from prodclass.serving.remote_predictor import RemoteModelError, RemotePredictor
from prodclass.serving.similarity import CatalogueIndex, compare, load_index, text_query

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
    if isinstance(predictor, RemotePredictor):  # vectors and the index need the model here
        raise RemoteModelError(
            "similarity and catalogue search need the model inside the API; this API forwards "
            f"predictions to the scoring endpoint {predictor.url} (PRODCLASS_SCORING_URL)"
        )
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


@router.get(
    "/products/similar",
    response_model=SimilarOut,
    responses={
        409: {
            "description": "no catalogue index for the serving version, or a `text` search "
            "with a model whose texts and photos are not in one space (the reason says which)"
        },
    },
)
async def similar_products(
    services: ServicesDep,
    _: AnyUser,
    row_id: Annotated[str | None, Query(description="A catalogue product (its row id).")] = None,
    designation: str = "",
    description: str = "",
    text: Annotated[
        str | None,
        Query(
            max_length=10_000,
            description="A phrase searched in the model's shared text-photo space; with "
            "`modality=image`, the products whose photos match it best. Only for a model that "
            "aligns texts and photos (clip-style); 409 with the reason otherwise.",
        ),
    ] = None,
    k: Annotated[int, Query(ge=1, le=100)] = 10,
    modality: Modality = "both",
) -> SimilarOut:
    """Catalogue products nearest to a catalogue product (``row_id``), to a title and
    description (compare their categories to spot duplicates and mis-categorised listings), or
    to a phrase (``text``: search the photos by words)."""
    predictor = _predictor(services)
    if text is not None and (row_id is not None or designation or description):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "search by text, by row_id or by designation/description: one at a time",
        )
    if text is not None:  # before the index: no shared space is a 409 saying so, index or not
        query = await asyncio.to_thread(text_query, predictor, text)
    elif row_id is not None:
        query = _index(services, predictor).row_vectors(row_id)
    else:
        query = await asyncio.to_thread(predictor.embed, [ProductInput(designation, description)])
    rows = _index(services, predictor).nearest(query, k, modality, exclude=row_id)
    return SimilarOut(model=model_ref(services, predictor), neighbours=_neighbours(rows))


@router.get(
    "/products/{row_id}/image",
    summary="The photo of a catalogue product (of the serving version's index)",
    response_class=Response,
    responses={
        200: {"content": {"image/*": {}}},
        404: {"description": "no such catalogue product, or it has no photo"},
        409: {"description": "no catalogue index for the serving version"},
    },
)
def catalogue_photo(row_id: str, services: ServicesDep, _: AnyUser) -> Response:
    predictor = _predictor(services)
    return photo_response(_index(services, predictor).photo_path(row_id).read_bytes())


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
