"""``/monitoring/summary``: prediction volume and latency over time, and the predicted class
mix next to the training data's (what the web app's monitoring page draws)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated

import pandas as pd
from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import select

from prodclass.data.layout import ChallengeLayout, read_labels
from prodclass.db.tables import PredictionRecord
from prodclass.serving.ab_testing import SHADOW
from prodclass.serving.api.deps import Reviewer, ServicesDep, SessionDep

router = APIRouter(prefix="/monitoring", tags=["monitoring"])
MAX_ROWS = 200_000


class Bucket(BaseModel):
    start: datetime
    predictions: int
    latency_ms_mean: float
    latency_ms_p95: float


class ClassShare(BaseModel):
    prdtypecode: int
    predicted: float  # share of predictions in the window
    training: float | None  # share in the labelled training data (None if not readable)


class SummaryOut(BaseModel):
    since: datetime
    predictions: int
    by_inputs: dict[str, int]
    timeline: list[Bucket]
    classes: list[ClassShare]
    training_data: str | None  # why training shares are missing, or where they come from


class JournalEntryOut(BaseModel):
    id: int
    created_at: datetime
    kind: str
    model_version: str | None
    summary: str
    details: dict


@router.get("/journal", response_model=list[JournalEntryOut], summary="The monitoring journal")
def journal_entries(
    services: ServicesDep,
    _: Reviewer,
    kind: Annotated[
        str | None, Query(pattern="^(drift|performance|retraining|model|alert|ab)$")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
) -> list[JournalEntryOut]:
    """Drift checks, quality measurements, retraining decisions, alerts and A/B test changes,
    newest first."""
    from prodclass.monitoring import journal

    return [
        JournalEntryOut(
            id=e.id,
            created_at=e.created_at,
            kind=e.kind,
            model_version=e.model_version,
            summary=e.summary,
            details=e.details,
        )
        for e in journal.entries(services.db_url, limit, kind)
    ]


@lru_cache(maxsize=4)
def training_shares(data_dir: Path) -> dict[int, float]:
    labels = read_labels(ChallengeLayout(data_dir).y_train)["prdtypecode"].astype(int)
    return labels.value_counts(normalize=True).to_dict()


@router.get("/summary", response_model=SummaryOut)
def summary(
    services: ServicesDep,
    _: Reviewer,
    session: SessionDep,
    hours: Annotated[float, Query(gt=0, le=24 * 90)] = 24,
    bucket_minutes: Annotated[int, Query(ge=1, le=24 * 60)] = 60,
) -> SummaryOut:
    services.prediction_log.flush()
    since = datetime.now(UTC) - timedelta(hours=hours)
    columns = (
        PredictionRecord.created_at,
        PredictionRecord.latency_ms,
        PredictionRecord.prdtypecode,
        PredictionRecord.inputs,
    )
    answered = (PredictionRecord.created_at >= since) & (PredictionRecord.arm != SHADOW)
    rows = session.execute(select(*columns).where(answered).limit(MAX_ROWS)).all()
    frame = pd.DataFrame(rows, columns=["created_at", "latency_ms", "prdtypecode", "inputs"])
    try:
        training = training_shares(services.settings.data_dir.resolve())
        source = str(services.settings.data_dir)
    except (OSError, ValueError, KeyError) as exc:
        training, source = {}, f"training labels not readable: {exc}"
    timeline: list[Bucket] = []
    if not frame.empty:
        stamps = pd.to_datetime(frame["created_at"], utc=True)
        grouped = frame.groupby(stamps.dt.floor(f"{bucket_minutes}min"))["latency_ms"]
        for start, latencies in grouped:
            timeline.append(
                Bucket(
                    start=start.to_pydatetime(),
                    predictions=len(latencies),
                    latency_ms_mean=round(float(latencies.mean()), 2),
                    latency_ms_p95=round(float(latencies.quantile(0.95)), 2),
                )
            )
    predicted = frame["prdtypecode"].value_counts(normalize=True).to_dict()
    codes = sorted(set(predicted) | set(training))
    classes = [
        ClassShare(
            prdtypecode=int(c),
            predicted=round(float(predicted.get(c, 0.0)), 6),
            training=round(float(training[c]), 6) if c in training else None,
        )
        for c in codes
    ]
    return SummaryOut(
        since=since,
        predictions=len(frame),
        by_inputs={str(k): int(v) for k, v in frame["inputs"].value_counts().items()},
        timeline=timeline,
        classes=classes,
        training_data=source,
    )
