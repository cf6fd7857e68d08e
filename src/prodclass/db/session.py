"""Engine, sessions and migrations of the application database (SQLite or PostgreSQL by URL)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")


class DatabaseNotReadyError(RuntimeError):
    """The database is not at the schema this code needs; the message says what to run."""


def _normalise(url: str) -> str:
    # "postgresql://" means psycopg2 to SQLAlchemy; psycopg 3 is what we ship
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    """One pooled engine per URL per process."""
    url = _normalise(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn, _record) -> None:  # WAL: readers do not block the log writer
            cursor = conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


@lru_cache(maxsize=8)
def _sessions(url: str) -> sessionmaker[Session]:
    return sessionmaker(engine_for(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session committed at the end of the block, rolled back on error."""
    session = _sessions(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = _normalise(url)
    return config


def upgrade(url: str, revision: str = "head") -> str:
    """Apply migrations up to ``revision``; return the revision the database is now at."""
    engine_for(url)  # creates a SQLite file's folder
    command.upgrade(_alembic_config(url), revision)
    return current_revision(url) or ""


def current_revision(url: str) -> str | None:
    with engine_for(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The newest migration (read from the scripts once: /ready asks on every probe)."""
    head = ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def check_schema(url: str) -> None:
    """Raise DatabaseNotReadyError unless the database is migrated to the code's head."""
    current, head = current_revision(url), head_revision()
    if current != head:
        raise DatabaseNotReadyError(
            f"database schema is at {current or 'nothing'}, this code needs {head}: "
            "run `prodclass db upgrade`"
        )
