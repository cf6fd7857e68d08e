"""Revoked tokens, stored so every API process and the CLI agree on them.

A token is revoked alone (sign-out) or with every other token of its user issued before a
moment (password, role or status changed, account deleted). Rows are dropped once the tokens
they concern would have expired anyway.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from prodclass.db.tables import Revocation


@dataclass
class RevokedSet:
    """What is revoked now: token ids, and per user the time before which tokens are void."""

    tokens: set[str] = field(default_factory=set)
    users: dict[str, float] = field(default_factory=dict)

    def covers(self, jti: str, username: str, issued_at: float) -> bool:
        return jti in self.tokens or issued_at < self.users.get(username, float("-inf"))


def revoke_token(session: Session, jti: str, username: str, expires_at: float) -> None:
    if session.scalar(select(Revocation.id).where(Revocation.jti == jti)) is None:
        session.add(Revocation(jti=jti, username=username, expires_at=expires_at))
        session.flush()


def revoke_user_tokens(session: Session, username: str, token_lifetime_seconds: float) -> None:
    """Void every token of ``username`` issued until now."""
    now = time.time()
    session.add(
        Revocation(username=username, not_before=now, expires_at=now + token_lifetime_seconds)
    )
    session.flush()


def user_cutoff(session: Session, username: str) -> tuple[float, float] | None:
    """(time before which ``username``'s tokens are void, when that stops mattering) of its
    latest revocation, or None."""
    row = session.execute(
        select(Revocation.not_before, Revocation.expires_at)
        .where(Revocation.username == username, Revocation.not_before.is_not(None))
        .order_by(Revocation.not_before.desc())
        .limit(1)
    ).first()
    return None if row is None else (float(row.not_before), float(row.expires_at))


def load_revoked(session: Session, now: float | None = None) -> RevokedSet:
    """The revocations still in force (expired ones are deleted on the way)."""
    now = time.time() if now is None else now
    session.execute(delete(Revocation).where(Revocation.expires_at < now))
    revoked = RevokedSet()
    for row in session.scalars(select(Revocation)):
        if row.jti is not None:
            revoked.tokens.add(row.jti)
        if row.not_before is not None:
            revoked.users[row.username] = max(row.not_before, revoked.users.get(row.username, 0))
    return revoked
