"""SQLAlchemy tables. Schema changes go through an Alembic migration in ``migrations/``."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

ROLES = ("admin", "reviewer", "client")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator):
    """A moment in UTC, read back with its offset on every database: SQLite has no time zone
    type and returns ``DateTime(timezone=True)`` values naive (stored in UTC, as written)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            return value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    email_encrypted: Mapped[str | None] = mapped_column(Text)  # AES-GCM, see db/encryption.py


class Revocation(Base):
    """Tokens that no longer count: one token (``jti``), or every token of ``username`` issued
    before ``not_before`` (password, role or status changed). Kept until ``expires_at``, when
    the tokens concerned would have expired anyway. Times are Unix seconds, like JWT claims."""

    __tablename__ = "revocations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    jti: Mapped[str | None] = mapped_column(String(64), unique=True)
    username: Mapped[str] = mapped_column(String(64))
    not_before: Mapped[float | None] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class PredictionRecord(Base):
    """One answered product: what came in (text, hashes, photo reference), what went out."""

    __tablename__ = "predictions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # uuid4, given to the client
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    username: Mapped[str | None] = mapped_column(String(64), index=True)
    model_uri: Mapped[str] = mapped_column(String(255))
    model_version: Mapped[str | None] = mapped_column(String(32), index=True)
    product_id: Mapped[str | None] = mapped_column(String(64))
    imageid: Mapped[str | None] = mapped_column(String(64))
    product_identifier: Mapped[str | None] = mapped_column(String(128))
    designation: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str] = mapped_column(Text, default="")
    text_sha256: Mapped[str | None] = mapped_column(String(64))
    image_sha256: Mapped[str | None] = mapped_column(String(64))  # its photo in the photo store
    inputs: Mapped[str] = mapped_column(String(16))  # text, image or text+image
    prdtypecode: Mapped[int] = mapped_column(Integer, index=True)
    probability: Mapped[float] = mapped_column(Float)
    top: Mapped[list] = mapped_column(JSON)  # [{prdtypecode, probability}, ...]
    latency_ms: Mapped[float] = mapped_column(Float)
    # which model answered: champion, challenger (A/B split), requested (a version asked by
    # name) or shadow (a challenger's answer that was never returned, to ``shadow_of``)
    arm: Mapped[str] = mapped_column(String(16), default="champion", server_default="champion")
    shadow_of: Mapped[str | None] = mapped_column(String(36), index=True)


class Feedback(Base):
    """A reviewer's verdict on a prediction: the true category (a correction when it differs)."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prediction_id: Mapped[str] = mapped_column(ForeignKey("predictions.id"), index=True)
    username: Mapped[str] = mapped_column(String(64))
    prdtypecode: Mapped[int] = mapped_column(Integer)
    is_correction: Mapped[bool] = mapped_column(Boolean)
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class JournalEntry(Base):
    """The monitoring journal: drift checks, quality from feedback, retraining decisions,
    alerts Alertmanager sent."""

    __tablename__ = "journal"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))  # drift | performance | ... | alert
    model_version: Mapped[str | None] = mapped_column(String(32))
    summary: Mapped[str] = mapped_column(Text)  # one sentence for people
    details: Mapped[dict] = mapped_column(JSON)  # the numbers
    # set for entries told more than once (an alert Alertmanager repeats): written once
    dedup_key: Mapped[str | None] = mapped_column(String(255), unique=True)


class RetrainingRequest(Base):
    """A retraining asked of Dagster through the API: the Dagster run that carries it out (its
    status lives in the Dagster instance every replica reads), who asked and when."""

    __tablename__ = "retraining_runs"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the Dagster run id
    job: Mapped[str] = mapped_column(String(64))
    requested_by: Mapped[str] = mapped_column(String(64))
    requested_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)


class AbTest(Base):
    """A live A/B test of the champion against a challenger version, one row per test, shared
    by every API replica: ``split`` sends ``challenger_share`` of the products (by a stable hash
    of their identifier) to the challenger; ``shadow`` has the challenger predict every
    product in the background. The running test is the one not stopped."""

    __tablename__ = "ab_tests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    challenger_version: Mapped[str] = mapped_column(String(32))
    champion_version: Mapped[str | None] = mapped_column(String(32))  # when it started
    mode: Mapped[str] = mapped_column(String(16))  # split | shadow
    challenger_share: Mapped[float] = mapped_column(Float)  # 0 to 0.5 (split)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    started_by: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(64))
    stopped_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    stopped_by: Mapped[str | None] = mapped_column(String(64))
