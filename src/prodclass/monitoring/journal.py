"""The monitoring journal: one row per drift check, quality measurement, retraining
decision, failed recovery of the serving model and A/B test change (who did it), with a
sentence for people and the numbers for machines."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from prodclass.db.session import session_scope
from prodclass.db.tables import JournalEntry

# model: a failing model load; ab: a live A/B test started, changed, stopped or decided
KINDS = ("drift", "performance", "retraining", "model", "ab")


def write(
    db_url: str, kind: str, summary: str, details: dict[str, Any], model_version: str | None
) -> int:
    if kind not in KINDS:
        raise ValueError(f"unknown journal kind {kind!r}; kinds: {', '.join(KINDS)}")
    with session_scope(db_url) as session:
        entry = JournalEntry(
            kind=kind, summary=summary, details=details, model_version=model_version
        )
        session.add(entry)
        session.flush()
        return entry.id


def latest(db_url: str, kind: str) -> JournalEntry | None:
    with session_scope(db_url) as session:
        query = select(JournalEntry).where(JournalEntry.kind == kind)
        return session.scalar(query.order_by(JournalEntry.id.desc()).limit(1))


def entries(db_url: str, limit: int = 50, kind: str | None = None) -> list[JournalEntry]:
    with session_scope(db_url) as session:
        query = select(JournalEntry).order_by(JournalEntry.id.desc()).limit(limit)
        if kind is not None:
            query = query.where(JournalEntry.kind == kind)
        return list(session.scalars(query))
