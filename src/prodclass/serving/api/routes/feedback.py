"""``/feedback``: reviewers confirm or correct predictions; corrections become training data
(``GET /feedback/export`` or ``prodclass feedback export``)."""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

from fastapi import APIRouter, HTTPException, Query, Response, status

from prodclass.db import feedback as reviews
from prodclass.serving.api.deps import Reviewer, ServicesDep, SessionDep
from prodclass.serving.api.schemas import FeedbackIn, FeedbackOut

router = APIRouter(prefix="/feedback", tags=["feedback"])


@router.post(
    "/{prediction_id}",
    response_model=FeedbackOut,
    status_code=status.HTTP_201_CREATED,
    summary="Confirm or correct the category of a prediction",
    responses={404: {"description": "no such prediction"}, 422: {"description": "unknown code"}},
)
def give_feedback(
    prediction_id: str,
    body: FeedbackIn,
    services: ServicesDep,
    reviewer: Reviewer,
    session: SessionDep,
) -> FeedbackOut:
    if services.prediction_log.pending(prediction_id):  # answered moments ago, not written yet
        services.prediction_log.flush()
    try:
        feedback = reviews.record_feedback(
            session, prediction_id, reviewer.username, body.prdtypecode, body.comment
        )
    except reviews.FeedbackError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    session.commit()  # stored before the reviewer hears so
    return FeedbackOut.model_validate(feedback)


@router.get("", response_model=list[FeedbackOut], summary="Latest feedback, newest first")
def list_feedback(
    _: Reviewer,
    session: SessionDep,
    corrections_only: bool = False,
    limit: int = Query(100, ge=1, le=10_000),
) -> list[FeedbackOut]:
    rows = reviews.list_feedback(session, corrections_only, limit)
    return [FeedbackOut.model_validate(f) for f in rows]


@router.get(
    "/export",
    summary="Reviewed products as a zip in the challenge layout (CSV + photos)",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}}},
)
def export(services: ServicesDep, _: Reviewer, session: SessionDep) -> Response:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        reviews.export_labelled(session, services.photos, root)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(root).as_posix())
    headers = {"Content-Disposition": 'attachment; filename="prodclass-feedback.zip"'}
    return Response(buffer.getvalue(), media_type="application/zip", headers=headers)
