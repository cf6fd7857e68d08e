"""The photo store, on a local folder and on an S3 bucket (moto's server over HTTP): photos
by content hash, a missing one is None, writing one twice changes nothing, names that are not
hashes are refused, a store that does not answer says so. The prediction log keeps every
record (photo included) while the store is down and writes them once it answers."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from prodclass.db.session import session_scope, upgrade
from prodclass.db.tables import PredictionRecord
from prodclass.photo_store import (
    LocalPhotoStore,
    PhotoStore,
    PhotoStoreError,
    S3PhotoStore,
    open_photo_store,
)
from prodclass.serving.prediction_log import SPILLED_PHOTO, LogRecord, PredictionLog
from prodclass.settings import Settings
from tests.servers import S3Bucket, free_port

PREFIX = "photos"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> PhotoStore:
    if request.param == "local":
        return LocalPhotoStore(tmp_path / "uploads")
    bucket: S3Bucket = request.getfixturevalue("s3_bucket")
    return S3PhotoStore(bucket.name, PREFIX, bucket.endpoint)


def test_put_get_exists_and_a_missing_photo(store: PhotoStore, sample_products):
    (_, first), (_, second) = sample_products.both[:2]
    assert store.get(_sha(first)) is None and not store.exists(_sha(first))
    store.put(_sha(first), first)
    assert store.get(_sha(first)) == first and store.exists(_sha(first))
    assert store.get(_sha(second)) is None  # another photo is still missing
    store.put(_sha(first), first)  # the same photo again: nothing changes
    store.put(_sha(second), second)
    assert (store.get(_sha(first)), store.get(_sha(second))) == (first, second)


def test_a_photo_as_a_file_for_the_export_and_the_models(store: PhotoStore, tmp_path: Path):
    photo = b"\xff\xd8 a jpeg, as far as the store cares"
    sha = _sha(photo)
    scratch = tmp_path / "scratch"
    assert store.save_as(sha, tmp_path / "out" / "a.jpg") is False
    assert not (tmp_path / "out" / "a.jpg").exists()
    assert store.local_path(sha, scratch) is None
    store.put(sha, photo)
    assert store.save_as(sha, tmp_path / "out" / "a.jpg") is True
    assert (tmp_path / "out" / "a.jpg").read_bytes() == photo
    path = store.local_path(sha, scratch)
    assert path is not None and path.read_bytes() == photo
    if isinstance(store, LocalPhotoStore):  # already a file here: no copy
        assert path == store.root / sha[:2] / sha and not scratch.exists()
    else:
        assert path.parent == scratch


def test_names_that_are_not_content_hashes_are_refused(store: PhotoStore):
    for name in ("../../etc/passwd", "A" * 64, "a" * 63, "a" * 64 + "/x", ""):
        with pytest.raises(ValueError, match="SHA-256"):
            store.put(name, b"x")
        with pytest.raises(ValueError, match="SHA-256"):
            store.get(name)


def test_the_layout_in_the_bucket_is_prefix_then_two_hex_digits(s3_bucket: S3Bucket):
    store = S3PhotoStore(s3_bucket.name, f"/{PREFIX}/", s3_bucket.endpoint)
    photo = b"photo bytes"
    store.put(_sha(photo), photo)
    assert s3_bucket.objects() == {f"{PREFIX}/{_sha(photo)[:2]}/{_sha(photo)}": photo}
    unprefixed = S3PhotoStore(s3_bucket.name, "", s3_bucket.endpoint)
    assert unprefixed.get(_sha(photo)) is None  # another prefix, another store


def test_a_store_that_does_not_answer_raises_photo_store_error(s3_bucket: S3Bucket):
    closed = S3PhotoStore(s3_bucket.name, PREFIX, f"http://127.0.0.1:{free_port()}")
    sha = _sha(b"x")
    calls = (lambda: closed.put(sha, b"x"), lambda: closed.get(sha), lambda: closed.exists(sha))
    for call in calls:
        with pytest.raises(PhotoStoreError, match="127.0.0.1"):
            call()
    no_bucket = S3PhotoStore(f"{s3_bucket.name}-gone", PREFIX, s3_bucket.endpoint)
    with pytest.raises(PhotoStoreError, match="NoSuchBucket"):
        no_bucket.put(sha, b"x")


def test_the_settings_choose_the_store(tmp_path: Path):
    for unset in (None, ""):  # an empty variable is no setting
        local = open_photo_store(Settings(state_dir=tmp_path, photo_store_url=unset))
        assert isinstance(local, LocalPhotoStore) and local.root == tmp_path / "uploads"
    remote = open_photo_store(
        Settings(photo_store_url="s3://shop-photos/prod/uploads", s3_endpoint_url="http://m:9000")
    )
    assert isinstance(remote, S3PhotoStore)
    assert (remote.bucket, remote.prefix, remote.endpoint_url) == (
        "shop-photos",
        "prod/uploads",
        "http://m:9000",
    )
    for wrong in ("http://photos", "s3://", "s3://Shop_Photos/x", "/data/photos"):
        with pytest.raises(ValidationError, match="photo_store_url"):
            Settings(photo_store_url=wrong)


# ---- the prediction log and a store that is down -----------------------------------------
def _record(photo: bytes) -> LogRecord:
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
        image_sha256=_sha(photo),
        inputs="text+image",
        prdtypecode=2583,
        probability=0.9,
        top=[{"prdtypecode": 2583, "probability": 0.9}],
        latency_ms=12.5,
        image=photo,
    )


def test_nothing_is_lost_while_the_photo_store_is_down(tmp_path: Path, s3_bucket: S3Bucket):
    database = f"sqlite:///{tmp_path / 'app.db'}"
    upgrade(database)
    down = S3PhotoStore(s3_bucket.name, PREFIX, f"http://127.0.0.1:{free_port()}")
    spill = tmp_path / "spill.jsonl"
    log = PredictionLog(database, down, spill, memory_limit=2)
    photos = [f"photo {i}".encode() for i in range(3)]
    records = [_record(photo) for photo in photos]
    log.append(records)
    assert log.flush() is False  # the store does not answer: no record is written without it
    assert log.failing and "PhotoStoreError" in (log.problem() or "")
    assert log.backlog == 3
    (spilled,) = [json.loads(line) for line in spill.read_text().splitlines()]
    assert spilled["id"] == records[0].id and spilled[SPILLED_PHOTO]  # the photo travels along
    with session_scope(database) as session:
        assert not list(session.scalars(select(PredictionRecord.id)))

    log.photos = S3PhotoStore(s3_bucket.name, PREFIX, s3_bucket.endpoint)  # it answers again
    assert log.flush() is True and not log.failing
    assert log.backlog == 0 and not spill.exists()
    with session_scope(database) as session:
        assert set(session.scalars(select(PredictionRecord.id))) == {r.id for r in records}
    assert s3_bucket.objects() == {f"{PREFIX}/{_sha(p)[:2]}/{_sha(p)}": p for p in photos}
