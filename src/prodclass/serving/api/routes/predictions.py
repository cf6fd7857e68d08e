"""``/predictions``: the prediction log, for reviewers (least confident first) and monitoring."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from prodclass.db.tables import Feedback, PredictionRecord
from prodclass.serving.ab_testing import SHADOW
from prodclass.serving.api.deps import Reviewer, ServicesDep, SessionDep

router = APIRouter(prefix="/predictions", tags=["predictions"])


class LoggedPredictionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    created_at: datetime
    username: str | None
    model_version: str | None
    arm: str
    product_id: str | None
    imageid: str | None
    designation: str
    description: str
    image_sha256: str | None
    inputs: str
    prdtypecode: int
    probability: float
    top: list[dict]
    latency_ms: float
    reviewed: bool = False


@router.get("", response_model=list[LoggedPredictionOut], summary="Logged predictions")
def list_predictions(
    services: ServicesDep,
    _: Reviewer,
    session: SessionDep,
    order: Annotated[str, Query(pattern="^(confidence|recent)$")] = "confidence",
    unreviewed: bool = True,
    hours: Annotated[float, Query(gt=0, le=24 * 365)] = 24 * 7,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[LoggedPredictionOut]:
    """The review queue: ``order=confidence`` puts the least confident first."""
    services.prediction_log.flush()  # include what was answered moments ago
    since = datetime.now(UTC) - timedelta(hours=hours)
    reviewed = select(Feedback.prediction_id)
    # what clients were answered: a shadow answer was never returned, so never reviewed
    query = select(PredictionRecord).where(
        PredictionRecord.created_at >= since, PredictionRecord.arm != SHADOW
    )
    if unreviewed:
        query = query.where(PredictionRecord.id.not_in(reviewed))
    if order == "confidence":
        query = query.order_by(PredictionRecord.probability.asc())
    else:
        query = query.order_by(PredictionRecord.created_at.desc())
    records = list(session.scalars(query.limit(limit)))
    done = set(session.scalars(reviewed.where(Feedback.prediction_id.in_([r.id for r in records]))))
    out = []
    for record in records:
        item = LoggedPredictionOut.model_validate(record)
        item.reviewed = record.id in done
        out.append(item)
    return out


@router.get(
    "/{prediction_id}/image",
    summary="The photo a prediction was made from",
    response_class=Response,
    responses={
        200: {"content": {"image/*": {}}},
        404: {"description": "no photo"},
        503: {"description": "the photo store does not answer"},
    },
)
def prediction_image(
    prediction_id: str, services: ServicesDep, _: Reviewer, session: SessionDep
) -> Response:
    record = session.get(PredictionRecord, prediction_id)
    if record is None or not record.image_sha256:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no photo for this prediction")
    data = services.photos.get(record.image_sha256)  # PhotoStoreError: 503 (app.py)
    if data is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "the photo is not stored (yet)")
    return photo_response(data)


def photo_response(data: bytes) -> Response:
    """A stored photo with its media type (PNG, else JPEG: what uploads and the catalogue hold)."""
    return Response(data, media_type="image/png" if data.startswith(b"\x89PNG") else "image/jpeg")
