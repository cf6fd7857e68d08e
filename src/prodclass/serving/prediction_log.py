"""The prediction log: every answered product is recorded, off the response path.

Requests append records to an in-memory buffer; one writer thread stores the photos (once, by
content hash, in the photo store: ``photo_store.py``) and inserts the records in bulk. When the
database or the photo store is unreachable the records stay buffered and are retried with
backoff; past ``memory_limit`` they are appended, photos included, to a spill file (written
without touching the network) and replayed once both answer, so nothing is lost while either
is down. ``prodclass_prediction_log_backlog`` shows what is pending,
``prodclass_prediction_log_failing`` (and ``/ready``) whether writes fail now.

A record the database refuses (a value it cannot store: the API refuses such text on the way
in, this is the last line) must not hold the others back: the failing batch is split until
the refused records are found; each is appended, with the reason, to the dead-letter file
(plain ASCII JSON lines: any text fits) and counted in
``prodclass_prediction_log_dead_letters_total``, and the others are written.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select
from sqlalchemy.exc import DataError, IntegrityError

from prodclass.db.session import session_scope
from prodclass.db.tables import PredictionRecord
from prodclass.photo_store import PhotoStore
from prodclass.serving import metrics

if TYPE_CHECKING:
    from prodclass.serving.json_products import ReceivedProduct
    from prodclass.serving.predictor import ModelIdentity, Prediction, Predictor

log = logging.getLogger(__name__)

# what the database (or its driver) answers for one record it will never store; anything else
# (server down, connection lost, a missing table) is retried later with the whole backlog
REFUSED = (DataError, IntegrityError, UnicodeError)
DEAD_LETTER_NAME = "prediction-log-dead.jsonl"
SPILLED_PHOTO = "image_base64"  # the photo of a spilled record, until the store has it
REPLAY_BATCH = 500  # records written per batch (and read from the spill file at a time)
PHOTO_UPLOADS = 8  # photos of a batch sent to the store side by side (a bucket is far away)


@dataclass
class LogRecord:
    id: str
    created_at: datetime
    username: str | None
    model_uri: str
    model_version: str | None
    product_id: str | None
    imageid: str | None
    product_identifier: str | None
    designation: str
    description: str
    text_sha256: str | None
    image_sha256: str | None
    inputs: str
    prdtypecode: int
    probability: float
    top: list[dict[str, Any]]
    latency_ms: float
    arm: str = "champion"  # champion, challenger, requested or shadow (serving/ab_testing.py)
    shadow_of: str | None = None  # a shadow answer: the prediction the client was given
    image: bytes | None = field(default=None, repr=False)  # in the photo store, not the table

    def row(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("image")
        return data

    @classmethod
    def answered(
        cls,
        record_id: str,
        username: str | None,
        product: ReceivedProduct,
        prediction: Prediction,
        predictor: Predictor | ModelIdentity,  # an endpoint names its model per answer
        latency_ms: float,
        arm: str = "champion",
        shadow_of: str | None = None,
    ) -> LogRecord:
        """The record of one product answered by ``predictor`` (a shadow answer leaves the
        photo to the record of the answer given)."""
        text = f"{product.input.designation}\n{product.input.description}"
        return cls(
            id=record_id,
            created_at=datetime.now(UTC),
            username=username,
            model_uri=predictor.model_uri,
            model_version=predictor.model_version,
            product_id=product.input.product_id,
            imageid=product.imageid,
            product_identifier=product.product_identifier,
            designation=product.input.designation,
            description=product.input.description,
            text_sha256=hashlib.sha256(text.encode()).hexdigest() if text.strip() else None,
            image_sha256=prediction.image_sha256,
            inputs=prediction.inputs,
            prdtypecode=prediction.prdtypecode,
            probability=prediction.top[0].probability,
            top=[
                {"prdtypecode": s.prdtypecode, "probability": s.probability} for s in prediction.top
            ],
            latency_ms=round(latency_ms, 2),
            arm=arm,
            shadow_of=shadow_of,
            image=product.input.image if shadow_of is None else None,
        )


class PredictionLog:
    def __init__(
        self,
        db_url: str,
        photos: PhotoStore,
        spill_file: Path,
        flush_seconds: float = 1.0,
        memory_limit: int = 10_000,
        dead_letter_file: Path | None = None,
    ) -> None:
        self.db_url = db_url
        self.photos = photos
        self.spill_file = spill_file
        self.dead_letter_file = dead_letter_file or spill_file.with_name(DEAD_LETTER_NAME)
        self.flush_seconds = flush_seconds
        self.memory_limit = memory_limit
        self._buffer: deque[LogRecord] = deque()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one writer at a time (thread or an explicit flush)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._uploads: ThreadPoolExecutor | None = None  # made at the first photo, per start
        self._spilled = self._count_spilled()
        self.failing_since: float | None = None  # monotonic time of the first failed write
        self.last_error: str | None = None
        self._update_backlog()

    # ---- producer side -------------------------------------------------------------------
    def append(self, records: list[LogRecord]) -> None:
        """Queue records for writing; returns at once."""
        with self._lock:
            self._buffer.extend(records)
            overflow = len(self._buffer) - self.memory_limit
            spill = [self._buffer.popleft() for _ in range(max(0, overflow))]
        if spill:
            self._spill(spill)
        self._update_backlog()

    @property
    def backlog(self) -> int:
        return len(self._buffer) + self._spilled

    @property
    def failing(self) -> bool:
        return self.failing_since is not None

    def problem(self) -> str | None:
        """Why the log cannot write now (``/ready`` says it), or None."""
        if self.failing_since is None:
            return None
        return (
            f"prediction log: writes failing for {time.monotonic() - self.failing_since:.0f} s, "
            f"{self.backlog} records pending ({self.last_error})"
        )

    def pending(self, record_id: str) -> bool:
        with self._lock:
            return any(r.id == record_id for r in self._buffer)

    # ---- writer side ---------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the writer after a last flush (what cannot be written is spilled to disk)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if not self.flush():
            with self._lock:
                rest = list(self._buffer)
                self._buffer.clear()
            if rest:
                self._spill(rest)
        if self._uploads is not None:
            self._uploads.shutdown()
            self._uploads = None
        self._update_backlog()

    def flush(self) -> bool:
        """Write what is pending now; True when nothing is left."""
        with self._flush_lock:
            try:
                self._replay_spill()
                while True:
                    with self._lock:
                        count = min(REPLAY_BATCH, len(self._buffer))
                        batch = [self._buffer[i] for i in range(count)]
                    if not batch:
                        self.failing_since = self.last_error = None
                        return True
                    self._write(batch)
                    with self._lock:
                        for _ in batch:
                            self._buffer.popleft()
                    self._update_backlog()
            except Exception as exc:  # database or photo store down: keep everything, retry
                metrics.LOG_WRITE_FAILURES.inc()
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                self.last_error = f"{type(exc).__name__}: {_first_line(exc)}"
                log.warning(
                    "prediction log: write failed, %d pending (%s)", self.backlog, self.last_error
                )
                return False
            finally:
                self._update_backlog()

    def _run(self) -> None:
        delay = self.flush_seconds
        while not self._stop.is_set():
            self._wake.wait(delay)
            self._wake.clear()
            ok = self.flush()
            delay = self.flush_seconds if ok else min(delay * 2, 30.0)

    def _write(self, batch: list[LogRecord]) -> None:
        """Photos first: a record in the table may be reviewed at once, its photo with it."""
        photos = {r.image_sha256: r.image for r in batch if r.image is not None and r.image_sha256}
        if photos:
            if self._uploads is None:
                self._uploads = ThreadPoolExecutor(PHOTO_UPLOADS, "prediction-log-photos")
            # consuming the results re-raises the first failure: the batch is retried whole
            list(self._uploads.map(self._store_photo, photos, photos.values()))
        self._insert_isolating(batch)

    def _insert_isolating(self, batch: list[LogRecord]) -> None:
        """Insert the batch; when the database refuses it, halve it until the refused records
        are alone, dead-letter them and insert the rest (log2(500) < 9 levels)."""
        try:
            self._insert(batch)
        except REFUSED as exc:
            if len(batch) == 1:
                self._dead_letter(batch[0], exc)
                return
            middle = len(batch) // 2
            self._insert_isolating(batch[:middle])
            self._insert_isolating(batch[middle:])

    def _insert(self, batch: list[LogRecord]) -> None:
        with session_scope(self.db_url) as session:
            ids = [r.id for r in batch]
            # a retry after a commit whose answer was lost must not insert twice
            done = set(
                session.scalars(select(PredictionRecord.id).where(PredictionRecord.id.in_(ids)))
            )
            rows = [r.row() for r in batch if r.id not in done]
            if rows:
                session.execute(insert(PredictionRecord), rows)

    def _store_photo(self, sha: str, image: bytes) -> None:
        if not self.photos.exists(sha):  # the same photo sent again is not uploaded again
            self.photos.put(sha, image)

    def _dead_letter(self, record: LogRecord, exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {_first_line(exc)}"
        letter = {"failed_at": time.time(), "reason": reason, "record": record.row()}
        self.dead_letter_file.parent.mkdir(parents=True, exist_ok=True)
        with self.dead_letter_file.open("a", encoding="ascii") as out:
            out.write(json.dumps(letter, default=_json_default) + "\n")
        metrics.LOG_DEAD_LETTERS.inc()
        log.error(
            "prediction log: record %s refused by the database (%s), kept in %s",
            record.id, reason, self.dead_letter_file,
        )  # fmt: skip

    # ---- spill file ----------------------------------------------------------------------
    def _spill(self, records: list[LogRecord]) -> None:
        """Append the records to the spill file with their photos: this runs on a request's
        thread, and the photo store may be what is down."""
        self.spill_file.parent.mkdir(parents=True, exist_ok=True)
        with self.spill_file.open("a", encoding="utf-8") as out:
            for record in records:
                row = record.row()
                if record.image is not None and record.image_sha256:
                    row[SPILLED_PHOTO] = base64.b64encode(record.image).decode("ascii")
                out.write(json.dumps(row, default=_json_default) + "\n")
        self._spilled += len(records)
        log.warning("prediction log: %d records spilled to %s", len(records), self.spill_file)

    def _count_spilled(self) -> int:
        if not self.spill_file.is_file():
            return 0
        with self.spill_file.open(encoding="utf-8") as lines:
            return sum(1 for _ in lines)

    def _replay_spill(self) -> None:
        """Write the spilled records, a batch at a time (with their photos they may not fit in
        memory at once); a failure part way leaves the file whole, and the records already
        written are recognised by their ids at the next attempt."""
        if not self._spilled:
            return
        replayed = 0
        batch: list[LogRecord] = []
        with self.spill_file.open(encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    batch.append(_spilled_record(json.loads(line)))
                if len(batch) == REPLAY_BATCH:
                    self._write(batch)
                    replayed, batch = replayed + len(batch), []
        if batch:
            self._write(batch)
            replayed += len(batch)
        self.spill_file.unlink()
        self._spilled = 0
        log.info("prediction log: replayed %d spilled records", replayed)

    def _update_backlog(self) -> None:
        metrics.LOG_BACKLOG.set(self.backlog)
        metrics.LOG_FAILING.set(1 if self.failing else 0)


def _spilled_record(row: dict[str, Any]) -> LogRecord:
    row["created_at"] = datetime.fromisoformat(row["created_at"])
    photo = row.pop(SPILLED_PHOTO, None)
    return LogRecord(**row, image=base64.b64decode(photo) if photo else None)


def _first_line(exc: Exception) -> str:
    """The driver's own words (SQLAlchemy appends the statement and its parameters)."""
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")
