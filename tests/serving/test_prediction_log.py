"""The prediction log keeps every record while the database is unreachable (in memory, then in
a spill file past its memory limit, photos included) and writes them all once the database
answers again."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from prodclass.db.session import session_scope, upgrade
from prodclass.db.tables import PredictionRecord
from prodclass.photo_store import LocalPhotoStore
from prodclass.serving.prediction_log import LogRecord, PredictionLog

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/nowhere?connect_timeout=1"


def _record(photo: bytes | None = None) -> LogRecord:
    return LogRecord(
        id=str(uuid.uuid4()),
        created_at=datetime.now(UTC),
        username="client",
        model_uri="models:/prodclass/1",
        model_version="1",
        product_id="42",
        imageid="7",
        product_identifier=None,
        designation="Piscine",
        description="",
        text_sha256="0" * 64,
        image_sha256=("a" * 64) if photo else None,
        inputs="text+image" if photo else "text",
        prdtypecode=2583,
        probability=0.9,
        top=[{"prdtypecode": 2583, "probability": 0.9}],
        latency_ms=12.5,
        image=photo,
    )


def test_nothing_is_lost_while_the_database_is_down(tmp_path: Path):
    photos = LocalPhotoStore(tmp_path / "uploads")
    log = PredictionLog(UNREACHABLE, photos, tmp_path / "spill.jsonl", memory_limit=3)
    records = [_record(b"photo-bytes")] + [_record() for _ in range(4)]
    log.append(records)
    assert len((tmp_path / "spill.jsonl").read_text().splitlines()) == 2  # over the memory limit
    assert photos.get("a" * 64) is None  # a spill touches no store: the photo is in the file
    assert log.flush() is False  # the database does not answer
    assert log.backlog == 5

    # a restart meanwhile finds the spilled records again, the photo with them
    reopened = PredictionLog(UNREACHABLE, photos, tmp_path / "spill.jsonl")
    assert reopened.backlog == 2

    database = f"sqlite:///{tmp_path / 'app.db'}"
    upgrade(database)
    log.db_url = database  # the database is back
    assert log.flush() is True
    assert log.backlog == 0 and not (tmp_path / "spill.jsonl").exists()
    assert photos.get("a" * 64) == b"photo-bytes"
    with session_scope(database) as session:
        stored = set(session.scalars(select(PredictionRecord.id)))
        assert stored == {r.id for r in records}
        log.append([records[0]])  # a retried record is not written twice
        assert log.flush() is True
    with session_scope(database) as session:
        assert session.scalar(select(func.count()).select_from(PredictionRecord)) == 5


def test_the_writer_thread_flushes_and_stop_writes_the_rest(tmp_path: Path):
    database = f"sqlite:///{tmp_path / 'app.db'}"
    upgrade(database)
    photos = LocalPhotoStore(tmp_path / "uploads")
    log = PredictionLog(database, photos, tmp_path / "spill.jsonl", flush_seconds=0.05)
    log.start()
    log.append([_record() for _ in range(3)])
    log.stop()
    with session_scope(database) as session:
        assert session.scalar(select(func.count()).select_from(PredictionRecord)) == 3
