"""``/predict``: one product (multipart, as form-posting clients send it) or many (JSON, or a zip
in the challenge layout streamed back as NDJSON). Every answered product is logged."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
import uuid
import zipfile
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Annotated

import pandas as pd
from fastapi import APIRouter, File, Form, HTTPException, UploadFile, status
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from prodclass.serving.api.deps import AnyUser, ServicesDep
from prodclass.serving.api.schemas import (
    BatchIn,
    BatchOut,
    CategoryOut,
    EmbeddingOut,
    ModelRef,
    PredictionOut,
    ProductIn,
    Storable,
    unstorable,
    validation_reason,
)
from prodclass.serving.api.services import Services
from prodclass.serving.json_products import ReceivedProduct, check_all, received
from prodclass.serving.prediction_log import LogRecord
from prodclass.serving.prediction_queue import Answer, NoModelError
from prodclass.serving.predictor import (
    InvalidProductError,
    ModelIdentity,
    Prediction,
    Predictor,
)
from prodclass.serving.security import Principal

router = APIRouter(tags=["predict"])

PAGE = 32  # products per model call when a batch is split into pages
BATCH_WAIT_SECONDS = 30.0  # a batch page waits this long for room in the queue


def model_ref(services: Services, predictor: Predictor | ModelIdentity) -> ModelRef:
    return ModelRef(
        name=predictor.model_name or services.settings.registered_model_name,
        version=predictor.model_version,
        family=predictor.family,
        uri=predictor.model_uri,
    )


def _answer(
    services: Services,
    principal: Principal,
    product: ReceivedProduct,
    prediction: Prediction,
    answer: Answer,
    latency_ms: float,
) -> tuple[PredictionOut, LogRecord]:
    top = [CategoryOut(**vars(score)) for score in prediction.top]
    served = prediction.served_by or answer.predictor  # an endpoint names its model per answer
    # set only when asked: an unset field stays out of the answer (response_model_exclude_unset)
    asked = (
        {"embeddings": [EmbeddingOut(**vars(e)) for e in prediction.embeddings]}
        if prediction.embeddings is not None
        else {}
    )
    out = PredictionOut(
        **asked,
        prediction_id=str(uuid.uuid4()),
        prdtypecode=prediction.prdtypecode,
        category=top[0],
        top=top,
        inputs=prediction.inputs,
        model=model_ref(services, served),
        product_id=product.input.product_id,
        imageid=product.imageid,
        product_identifier=product.product_identifier,
        latency_ms=round(latency_ms, 2),
    )
    text = f"{product.input.designation}\n{product.input.description}"
    record = LogRecord(
        id=out.prediction_id,
        created_at=datetime.now(UTC),
        username=principal.username,
        model_uri=served.model_uri,
        model_version=served.model_version,
        product_id=product.input.product_id,
        imageid=product.imageid,
        product_identifier=product.product_identifier,
        designation=product.input.designation,
        description=product.input.description,
        text_sha256=hashlib.sha256(text.encode()).hexdigest() if text.strip() else None,
        image_sha256=prediction.image_sha256,
        inputs=prediction.inputs,
        prdtypecode=prediction.prdtypecode,
        probability=prediction.top[0].probability,
        top=[{"prdtypecode": s.prdtypecode, "probability": s.probability} for s in prediction.top],
        latency_ms=out.latency_ms,
        image=product.input.image,
    )
    return out, record


async def _predict_page(
    services: Services,
    principal: Principal,
    page: list[ReceivedProduct],
    top_k: int,
    wait: float,
    embed: bool = False,
) -> list[PredictionOut]:
    start = time.perf_counter()
    future = services.queue.submit([p.input for p in page], top_k, wait_seconds=wait, embed=embed)
    answer = await asyncio.wrap_future(future)
    latency_ms = (time.perf_counter() - start) * 1000
    outs, records = [], []
    for product, prediction in zip(page, answer.predictions):
        out, record = _answer(services, principal, product, prediction, answer, latency_ms)
        outs.append(out)
        records.append(record)
    services.prediction_log.append(records)
    return outs


async def read_upload(upload: UploadFile | None, limit: int) -> bytes | None:
    if upload is None:
        return None
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE, f"photo is over the {limit}-byte limit"
        )
    return data or None  # an empty file field is "no photo"


@router.post(
    "/predict",
    response_model=PredictionOut,
    response_model_exclude_unset=True,  # `embeddings` only when asked
    summary="Classify one product (title, description and/or photo)",
    responses={
        409: {"description": "embeddings asked of a model family that has none"},
        413: {"description": "photo too large"},
        422: {"description": "nothing to classify, or the photo is not a usable image"},
        503: {"description": "queue full (Retry-After) or no model loaded"},
    },
)
async def predict(
    services: ServicesDep,
    principal: AnyUser,
    designation: Annotated[Storable, Form(max_length=10_000)] = "",
    description: Annotated[Storable, Form(max_length=100_000)] = "",
    product_id: Annotated[Storable | None, Form(max_length=64)] = None,
    imageid: Annotated[Storable | None, Form(max_length=64)] = None,
    product_identifier: Annotated[Storable | None, Form(max_length=128)] = None,
    top_k: Annotated[int | None, Form(ge=1, le=27)] = None,
    return_embedding: Annotated[
        bool, Form(description="Also answer the product's vectors (`embeddings`).")
    ] = False,
    image: Annotated[
        UploadFile | None, File(description="The product photo (JPEG, PNG...)")
    ] = None,
) -> PredictionOut:
    photo = await read_upload(image, services.settings.api_max_upload_bytes)
    product = ReceivedProduct.of(
        designation, description, photo, product_id, imageid, product_identifier
    )
    k = top_k or services.settings.api_top_k
    (out,) = await _predict_page(
        services, principal, [product], k, wait=0.0, embed=return_embedding
    )
    return out


@router.post(
    "/predict/batch",
    response_model=BatchOut,
    response_model_exclude_unset=True,  # `embeddings` only when asked
    summary="Classify many products given as JSON (photos as base64)",
    responses={
        409: {"description": "embeddings asked of a model family that has none"},
        413: {"description": "too many products: page them or send a zip"},
    },
)
async def predict_batch(body: BatchIn, services: ServicesDep, principal: AnyUser) -> BatchOut:
    limit = services.settings.api_max_products_per_request
    if len(body.products) > limit:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"{len(body.products)} products is over the {limit}-product limit of one call: "
            "send pages, or a zip to /predict/batch/zip",
        )
    predictor = services.slot.current
    if predictor is None:
        raise NoModelError("no model is loaded yet")
    problems: list[str] = []
    products = [received(p, position, problems) for position, p in enumerate(body.products)]
    check_all(predictor, products, problems)
    k = body.top_k or services.settings.api_top_k
    pages = [products[i : i + PAGE] for i in range(0, len(products), PAGE)]
    outs = await asyncio.gather(
        *(
            _predict_page(services, principal, page, k, BATCH_WAIT_SECONDS, body.return_embedding)
            for page in pages
        )
    )
    return BatchOut(predictions=[o for page in outs for o in page])


@router.post(
    "/predict/batch/zip",
    summary="Classify a zip in the challenge layout; answers stream back as NDJSON",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/x-ndjson": {}}, "description": "one JSON line per row"},
        422: {"description": "not a zip, no CSV, or the CSV lacks the challenge columns"},
    },
)
async def predict_zip(
    services: ServicesDep,
    principal: AnyUser,
    archive: Annotated[UploadFile, File(description="CSV (X_*.csv layout) + photos")],
    top_k: Annotated[int | None, Form(ge=1, le=27)] = None,
) -> StreamingResponse:
    """Rows come from the CSV (columns designation, description, productid, imageid); a row's
    photo is ``image_{imageid}_product_{productid}.jpg`` anywhere in the zip. Each output line
    is a prediction, or ``{"row": ..., "error": ...}`` for a row that cannot be classified."""
    data = await archive.read()
    rows, photos = _read_challenge_zip(data, services.settings.api_max_upload_bytes)
    k = top_k or services.settings.api_top_k
    if services.slot.current is None:
        raise NoModelError("no model is loaded yet")

    async def lines() -> AsyncIterator[bytes]:
        for start in range(0, len(rows), PAGE):
            page: list[ReceivedProduct] = []
            answers: dict[str, dict] = {}  # row id -> its line, written in the CSV's order
            for row_id, row in rows.iloc[start : start + PAGE].iterrows():
                if problem := _row_problem(row):
                    answers[str(row_id)] = {"error": problem}
                    continue
                name = f"image_{row['imageid']}_product_{row['productid']}.jpg"
                product = ReceivedProduct.of(
                    row["designation"],
                    row["description"],
                    photos.get(name),
                    row["productid"] or None,
                    row["imageid"] or None,
                    str(row_id),
                )
                try:
                    services.slot.current.check(product.input)  # type: ignore[union-attr]
                except InvalidProductError as exc:
                    answers[str(row_id)] = {"error": str(exc).removeprefix("product 0: ")}
                    continue
                answers[str(row_id)] = {}
                page.append(product)
            if page:
                outs = await _predict_page(services, principal, page, k, BATCH_WAIT_SECONDS)
                for product, out in zip(page, outs):
                    answers[str(product.product_identifier)] = out.model_dump(exclude_unset=True)
            for row_id, answer in answers.items():
                yield (json.dumps({"row": row_id, **answer}) + "\n").encode()

    return StreamingResponse(lines(), media_type="application/x-ndjson")


def _row_problem(row: pd.Series) -> str | None:
    """Why a CSV row cannot be classified and logged as it is (text the database cannot
    store, ids over the log's limits: the checks of a JSON product), or None."""
    fields = {
        "designation": row["designation"],
        "description": row["description"],
        "product_id": row["productid"] or None,
        "imageid": row["imageid"] or None,
    }
    try:
        ProductIn.model_validate(fields)
    except ValidationError as exc:
        return validation_reason(exc.errors())
    return None


# what reading a damaged zip raises: bad CRC or header, corrupt deflate data, truncation, bad
# offsets (ValueError); RuntimeError: an encrypted member, or an unknown compression method
ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, RuntimeError, ValueError)


def _read_challenge_zip(data: bytes, max_photo_bytes: int) -> tuple[pd.DataFrame, dict[str, bytes]]:
    def refuse(reason: str) -> HTTPException:
        return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, reason)

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except ZIP_READ_ERRORS:
        raise refuse("the upload is not a zip file") from None
    entries = [e for e in archive.infolist() if not e.is_dir()]
    if len(entries) > 200_000:
        raise refuse(f"the zip holds {len(entries)} files; at most 200000")
    csvs = sorted(
        (e for e in entries if e.filename.lower().endswith(".csv")), key=lambda e: e.filename
    )
    if not csvs:
        raise refuse("the zip holds no CSV file (expected X_*.csv in the challenge layout)")
    csv = next((e for e in csvs if PurePosixPath(e.filename).name.startswith("X_")), csvs[0])
    try:
        raw = archive.open(csv).read()
        if b"\x00" in raw:  # pandas would cut the field there: refused, never stored cut
            raise refuse(f"{csv.filename} {unstorable(chr(0))}")
        rows = pd.read_csv(io.BytesIO(raw), index_col=0, dtype=str, keep_default_na=False)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise refuse(f"{csv.filename} is not a readable CSV: {exc}") from None
    except ZIP_READ_ERRORS as exc:  # the member itself is damaged (also ValueErrors)
        raise refuse(f"{csv.filename} cannot be read from the zip: {exc}") from None
    missing = {"designation", "description", "productid", "imageid"} - set(rows.columns)
    if missing:
        raise refuse(f"{csv.filename} lacks the columns {sorted(missing)}")
    photos: dict[str, bytes] = {}
    for entry in entries:
        name = PurePosixPath(entry.filename).name
        if not name.lower().endswith((".jpg", ".jpeg", ".png")):
            continue
        try:  # read at most one byte over the limit: a zip bomb is never inflated
            with archive.open(entry) as stream:
                content = stream.read(max_photo_bytes + 1)
        except ZIP_READ_ERRORS as exc:
            raise refuse(f"{entry.filename} cannot be read from the zip: {exc}") from None
        if len(content) > max_photo_bytes:
            raise refuse(f"{entry.filename} is over the {max_photo_bytes}-byte photo limit")
        photos[name] = content
    return rows, photos
