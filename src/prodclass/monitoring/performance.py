"""Quality in production, from reviewers' verdicts: weighted and per-class F1 of the served
predictions that a reviewer confirmed or corrected (latest verdict per prediction)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sklearn.metrics import f1_score
from sqlalchemy import select

from prodclass.db.session import session_scope
from prodclass.db.tables import Feedback, PredictionRecord


def reviewed_pairs(db_url: str, since: datetime) -> list[tuple[int, int, str | None]]:
    """(true code, predicted code, model version) of reviewed predictions made since ``since``."""
    with session_scope(db_url) as session:
        rows = session.execute(
            select(
                Feedback.prediction_id,
                Feedback.prdtypecode,
                PredictionRecord.prdtypecode,
                PredictionRecord.model_version,
            )
            .join(PredictionRecord, Feedback.prediction_id == PredictionRecord.id)
            .where(PredictionRecord.created_at >= since)
            .order_by(Feedback.id)
        ).all()
    latest = {pid: (int(true), int(pred), version) for pid, true, pred, version in rows}
    return list(latest.values())


def rolling_quality(db_url: str, days: float = 7.0) -> dict[str, Any]:
    since = datetime.now(UTC) - timedelta(days=days)
    pairs = reviewed_pairs(db_url, since)
    if not pairs:
        return {"n": 0, "days": days, "weighted_f1": None, "per_class_f1": {}, "accuracy": None}
    truth = [t for t, _, _ in pairs]
    predicted = [p for _, p, _ in pairs]
    codes = sorted(set(truth))
    per_class = f1_score(truth, predicted, labels=codes, average=None, zero_division=0)
    return {
        "n": len(pairs),
        "days": days,
        "weighted_f1": round(
            float(f1_score(truth, predicted, average="weighted", zero_division=0)), 4
        ),
        "accuracy": round(sum(t == p for t, p in zip(truth, predicted)) / len(pairs), 4),
        "per_class_f1": {str(c): round(float(f), 4) for c, f in zip(codes, per_class)},
        "by_model_version": {
            str(v): sum(1 for _, _, w in pairs if w == v) for v in {w for _, _, w in pairs}
        },
    }
