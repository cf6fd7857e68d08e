"""``/predict``: one product (multipart, as form-posting clients send it) or many (JSON, or a zip
in the challenge layout streamed back as NDJSON). Every answered product is logged."""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
import zipfile
import zlib
from collections.abc import AsyncIterator
from pathlib import PurePosixPath
from typing import Annotated

import pandas as pd
from fastapi import APIRouter, File, Form, HTTPException, UploadFile, status
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from prodclass.registry.model_registry import require_version
from prodclass.serving import metrics
from prodclass.serving.ab_testing import CHALLENGER, CHAMPION, REQUESTED, Plan
from prodclass.serving.api.deps import AnyUser, ServicesDep
from prodclass.serving.api.schemas import (
    BatchOut,
    CategoryOut,
    EmbeddingOut,
    ModelRef,
    ModelVersionRef,
    PredictBatchIn,
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
from prodclass.serving.version_slots import VersionLoadError

router = APIRouter(tags=["predict"])

PAGE = 32  # products per model call when a batch is split into pages
BATCH_WAIT_SECONDS = 30.0  # a batch page waits this long for room in the queue
VERSION_ROLES = ("admin", "reviewer")  # who may ask for a model version by name


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
    arm: str,
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
        arm=arm,
    )
    record = LogRecord.answered(
        out.prediction_id, principal.username, product, prediction, served,
        out.latency_ms, arm,
    )  # fmt: skip
    return out, record


async def _predict_page(
    services: Services,
    principal: Principal,
    page: list[ReceivedProduct],
    top_k: int,
    wait: float,
    embed: bool = False,
    requested: Predictor | None = None,
) -> list[PredictionOut]:
    """Answer a page: by ``requested`` (a version asked by name), else as the running A/B
    test says (each product's arm; shadowed by the challenger in shadow mode)."""
    if requested is not None:
        arm = CHAMPION if requested is services.slot.current else REQUESTED
        plan = Plan(None, [arm] * len(page), None)
        predictors = {arm: requested}
    else:
        plan = services.ab.plan(page)
        predictors = {CHAMPION: None, CHALLENGER: plan.challenger}
    groups: dict[str, list[int]] = {}
    for position, arm in enumerate(plan.arms):
        groups.setdefault(arm, []).append(position)
    start = time.perf_counter()
    futures = {
        arm: services.queue.submit(
            [page[i].input for i in positions], top_k, wait, embed, predictors[arm]
        )
        for arm, positions in groups.items()
    }

    async def finish(arm: str) -> tuple[str, Answer, float]:
        answer = await asyncio.wrap_future(futures[arm])
        return arm, answer, (time.perf_counter() - start) * 1000

    outs: list[PredictionOut | None] = [None] * len(page)
    records = []
    for arm, answer, latency_ms in await asyncio.gather(*map(finish, futures)):
        version = answer.predictor.model_version or ""
        for position, prediction in zip(groups[arm], answer.predictions):
            out, record = _answer(
                services, principal, page[position], prediction, answer, latency_ms, arm
            )
            outs[position] = out
            records.append(record)
            metrics.AB_PREDICTIONS.labels(arm, version).inc()
            metrics.AB_LATENCY.labels(arm).observe(latency_ms / 1000)
            metrics.AB_CONFIDENCE.labels(arm).observe(prediction.top[0].probability)
    services.prediction_log.append(records)
    answered = [out for out in outs if out is not None]
    if plan.shadowed:
        services.ab.shadow.offer(
            plan.challenger,  # type: ignore[arg-type]
            page,
            [out.prediction_id for out in answered],
            principal.username,
            top_k,
        )
    return answered


def version_predictor(services: Services, ref: str) -> Predictor:
    """The predictor of a registered version (number or alias): the champion's when it is
    the version serving, else one loaded beside it (on demand, waiting for the load)."""
    champion = services.slot.current
    if ref.isdigit():  # served already: no registry call
        if champion is not None and champion.model_version == ref:
            return champion
        if (loaded := services.ab.versions.loaded(ref)) is not None:
            return loaded
    version = require_version(services.settings.registered_model_name, ref)  # 404
    if champion is not None and champion.model_version == version:
        return champion
    try:
        return services.ab.versions.get(version, wait=True)
    except VersionLoadError as exc:
        if exc.loading:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), {"Retry-After": "10"}
            ) from None
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None


async def requested_version(
    services: Services, principal: Principal, ref: str | None
) -> Predictor | None:
    """The version a request names, for admins and reviewers (403 for anyone else)."""
    if ref is None:
        return None
    if principal.role not in VERSION_ROLES:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"role {principal.role!r} may not choose the model version (needs "
            f"{' or '.join(VERSION_ROLES)}); leave model_version out to get the champion",
        )
    return await asyncio.to_thread(version_predictor, services, ref)


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
        403: {"description": "model_version asked by a role that may not choose it"},
        404: {"description": "model_version names no registered version"},
        409: {"description": "embeddings asked of a model family that has none"},
        413: {"description": "photo too large"},
        422: {
            "description": "nothing to classify, the photo is not a usable image, or "
            "model_version cannot be served"
        },
        503: {
            "description": "queue full (Retry-After), no model loaded, or model_version "
            "still loading"
        },
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
    model_version: Annotated[ModelVersionRef | None, Form()] = None,
    image: Annotated[
        UploadFile | None, File(description="The product photo (JPEG, PNG...)")
    ] = None,
) -> PredictionOut:
    requested = await requested_version(services, principal, model_version)
    photo = await read_upload(image, services.settings.api_max_upload_bytes)
    product = ReceivedProduct.of(
        designation, description, photo, product_id, imageid, product_identifier
    )
    k = top_k or services.settings.api_top_k
    (out,) = await _predict_page(
        services, principal, [product], k, 0.0, return_embedding, requested
    )
    return out


@router.post(
    "/predict/batch",
    response_model=BatchOut,
    response_model_exclude_unset=True,  # `embeddings` only when asked
    summary="Classify many products given as JSON (photos as base64)",
    responses={
        403: {"description": "model_version asked by a role that may not choose it"},
        404: {"description": "model_version names no registered version"},
        409: {"description": "embeddings asked of a model family that has none"},
        413: {"description": "too many products: page them or send a zip"},
    },
)
async def predict_batch(
    body: PredictBatchIn, services: ServicesDep, principal: AnyUser
) -> BatchOut:
    limit = services.settings.api_max_products_per_request
    if len(body.products) > limit:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"{len(body.products)} products is over the {limit}-product limit of one call: "
            "send pages, or a zip to /predict/batch/zip",
        )
    requested = await requested_version(services, principal, body.model_version)
    predictor = requested or services.slot.current
    if predictor is None:
        raise NoModelError("no model is loaded yet")
    problems: list[str] = []
    products = [received(p, position, problems) for position, p in enumerate(body.products)]
    check_all(predictor, products, problems)
    k = body.top_k or services.settings.api_top_k
    pages = [products[i : i + PAGE] for i in range(0, len(products), PAGE)]
    outs = await asyncio.gather(
        *(
            _predict_page(
                services, principal, page, k, BATCH_WAIT_SECONDS, body.return_embedding, requested
            )
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
