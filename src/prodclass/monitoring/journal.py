"""The monitoring journal: one row per drift check, quality measurement, retraining
decision, failed recovery of the serving model, alert (firing or resolved) Alertmanager sent and
A/B test change (who did it), with a sentence for people and the numbers for machines."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from prodclass.db.session import session_scope
from prodclass.db.tables import JournalEntry

# model: a failing model load; alert: a notification of Alertmanager's webhook; ab: a live A/B
# test started, changed, stopped or decided
KINDS = ("drift", "performance", "retraining", "model", "alert", "ab")


def write(
    db_url: str,
    kind: str,
    summary: str,
    details: dict[str, Any],
    model_version: str | None,
    dedup_key: str | None = None,
) -> int | None:
    """Add an entry; return its id. With ``dedup_key``, an entry already written under that
    key (by this process or another replica) is kept and None returned: senders that repeat
    themselves, as Alertmanager does, do not flood the journal."""
    if kind not in KINDS:
        raise ValueError(f"unknown journal kind {kind!r}; kinds: {', '.join(KINDS)}")
    if dedup_key is not None and _has_key(db_url, dedup_key):
        return None
    try:
        with session_scope(db_url) as session:
            entry = JournalEntry(
                kind=kind,
                summary=summary,
                details=details,
                model_version=model_version,
                dedup_key=dedup_key,
            )
            session.add(entry)
            session.flush()
            return entry.id
    except IntegrityError:
        if dedup_key is not None and _has_key(db_url, dedup_key):
            return None  # written meanwhile by a concurrent request
        raise


def _has_key(db_url: str, dedup_key: str) -> bool:
    with session_scope(db_url) as session:
        found = session.scalar(select(JournalEntry.id).where(JournalEntry.dedup_key == dedup_key))
        return found is not None


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
