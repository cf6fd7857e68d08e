"""Two real `prodclass serve` processes on one PostgreSQL database, one Redis, one S3 photo
bucket and one Dagster instance behave as one API: a photo sent to A is in B's review queue,
served by B and in B's feedback export; a token revoked on A is refused by B; one user's rate
limit counts requests on both; a retraining asked of A is a Dagster run whose end both report;
and each replica keeps its own photo feature and OCR caches under their cap.

The served model is a `late-fusion` folder that reads the words on photos sent without text
(``ocr: photo_only``), so a photo-only product goes through both caches."""

from __future__ import annotations

import hashlib
import io
import os
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow
import pytest

from prodclass.data.prepare import load_prepared
from prodclass.db.session import session_scope, upgrade
from prodclass.db.users import create_user
from prodclass.models.feature_cache import FeatureCache
from prodclass.models.registry import create
from prodclass.settings import get_settings
from tests.servers import (
    DUMMY_AWS,
    S3Bucket,
    new_bucket,
    new_redis_space,
    wait_for,
    with_database,
)
from tests.serving.conftest import SamplePhotos
from tests.serving.pipeline_project import dvc_project
from tests.serving.replicas import PASSWORD, TIMEOUT, bearer, me, running_replicas

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

USERS = {
    "admin": "admin",  # asks for the retraining and follows it
    "poster": "client",  # sends photos to A
    "sender": "client",  # sends photos to B
    "reviewer": "reviewer",
    "bob": "client",  # signs out
    "rate": "client",  # hits the rate limit
}
PER_MINUTE, BURST = 12, 6  # 6 requests at once, then one per 5 s: a window of 30 s
CAP_MB = 1  # each replica's feature and OCR caches
MIB = 1024 * 1024
PREFIX = "uploads"
OLD_VERSION = "0123456789abcdef"  # a cache folder no model of today reads
# the champion family, cut for speed (two inner folds), reading photos that come without text
MODEL_PARAMS = {"threads": 1, "fusion_folds": 2, "ocr": "photo_only"}


@dataclass
class Pair:
    a: str
    b: str
    state: dict[str, Path]  # each replica's state folder
    filled: dict[tuple[str, str], set[Path]]  # old entries in its caches before it started
    db_url: str
    bucket: S3Bucket


@pytest.fixture(scope="module")
def photo_words_model(six_codes_prepared: Path, sample: Path, tmp_path_factory) -> Path:
    """A late-fusion model folder trained on the six-code products (its caches out of the way)."""
    root = tmp_path_factory.mktemp("photo-words")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRODCLASS_STATE_DIR", str(root / "state"))
        mp.setenv("PRODCLASS_DATA_DIR", str(sample))
        get_settings.cache_clear()
        model = create("late-fusion", MODEL_PARAMS)
        model.cache = FeatureCache(root / "feature-cache")
        model.ocr_cache_dir = root / "ocr-cache"
        model.fit(load_prepared(six_codes_prepared, "train"))
        folder = model.save(root / "model")
    get_settings.cache_clear()
    return folder


def _fill(cache: Path, entry_bytes: int, total: int) -> set[Path]:
    """Entries of an older version, an hour old, taking ``total`` bytes in ``cache``: what a
    replica finds from before, and what its cap should evict first."""
    old = time.time() - 3600
    written = set()
    for i in range(total // entry_bytes):
        sha = hashlib.sha256(f"{cache}-{i}".encode()).hexdigest()
        path = cache / OLD_VERSION / sha[:2] / f"{sha}.old"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(entry_bytes))
        os.utime(path, (old, old))
        written.add(path)
    return written


def _entries_bytes(cache: Path) -> int:
    """What a cache's entries (``root/<version>/<shard>/<entry>``) take on disk."""
    return sum(
        max(p.stat().st_size, p.stat().st_blocks * 512) for p in cache.glob("*/*/*") if p.is_file()
    )


@pytest.fixture(scope="module")
def pair(
    photo_words_model: Path,
    postgres_url: str,
    database: str,
    redis_server: str,
    s3_server: str,
    tmp_path_factory,
) -> Iterator[Pair]:
    folder = tmp_path_factory.mktemp("two-replicas")
    db_url = with_database(postgres_url, database)
    upgrade(db_url)
    with session_scope(db_url) as session:
        for username, role in USERS.items():
            create_user(session, username, PASSWORD, role)
    # caches nearly full: a few new photos take each over its cap
    filled = {
        (name, cache): _fill(folder / name / cache, size, CAP_MB * MIB - size)
        for name in "ab"
        for cache, size in (("feature-cache", 16 * 1024), ("ocr-cache", 4096))
    }
    bucket = new_bucket(s3_server)
    # a registry that answers (a model folder is only loaded when one does), made here: two
    # servers creating one SQLite store at once would race
    registry = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.MlflowClient(registry).create_experiment("prodclass")
    settings = {
        "model_uri": str(photo_words_model),
        "mlflow_tracking_uri": registry,
        "api_rate_limit_per_minute": str(PER_MINUTE),
        "api_rate_limit_burst": str(BURST),
        "photo_store_url": f"s3://{bucket.name}/{PREFIX}",
        "s3_endpoint_url": bucket.endpoint,
        "dagster_home": str(folder / "dagster"),
        "pipeline_dir": str(dvc_project(folder / "project")),
        "feature_cache_max_mb": str(CAP_MB),
        "ocr_cache_max_mb": str(CAP_MB),
        "prediction_log_flush_seconds": "0.2",
    }
    with (
        new_redis_space(redis_server) as space,
        pytest.MonkeyPatch.context() as mp,  # the AWS variables reach the servers' environment
    ):
        for name, value in DUMMY_AWS.items():
            mp.setenv(name, value)
        with running_replicas("ab", folder, db_url, space, "/ready", **settings) as (a, b):
            state = {"a": folder / "a", "b": folder / "b"}
            yield Pair(a.url, b.url, state, filled, db_url, bucket)


def _predict(url: str, headers: dict, photo: bytes, fields: dict | None = None) -> str:
    answer = httpx.post(
        f"{url}/predict",
        data=fields or {},
        files={"image": ("p.jpg", photo, "image/jpeg")},
        headers=headers,
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["prediction_id"]


def _stored(db_url: str, prediction_id: str) -> bool:
    import psycopg

    with psycopg.connect(db_url, connect_timeout=5) as conn:
        found = conn.execute("SELECT 1 FROM predictions WHERE id = %s", (prediction_id,))
        return found.fetchone() is not None


def _latest(url: str, headers: dict) -> dict:
    latest = httpx.get(f"{url}/training/runs/latest", headers=headers, timeout=TIMEOUT)
    assert latest.status_code == 200, latest.text
    return latest.json()


def test_two_replicas_behave_as_one(pair: Pair, sample_products: SamplePhotos):
    a, b = pair.a, pair.b

    # a retraining asked of A: a Dagster run, followed to its end below while the rest runs
    admin = bearer(a, "admin")
    asked = httpx.post(f"{a}/training/runs", headers=admin, timeout=TIMEOUT)
    assert asked.status_code == 202, asked.text
    run = asked.json()
    assert run["job"] == "retraining" and run["state"] in ("queued", "running"), run
    busy = httpx.post(f"{b}/training/runs", headers=bearer(b, "admin"), timeout=TIMEOUT)
    assert busy.status_code == 409 and run["id"] in busy.json()["detail"]

    # a photo sent to A: in the bucket, nowhere on A; in B's queue, served and exported by B
    fields, photo = sample_products.both[0]
    sha = hashlib.sha256(photo).hexdigest()
    poster = bearer(a, "poster")
    prediction_id = _predict(a, poster, photo, fields)
    wait_for(lambda: _stored(pair.db_url, prediction_id), "the prediction in PostgreSQL", 30)
    assert pair.bucket.objects()[f"{PREFIX}/{sha[:2]}/{sha}"] == photo
    assert not (pair.state["a"] / "uploads").exists()
    reviewer = bearer(b, "reviewer")
    queue = httpx.get(
        f"{b}/predictions",
        params={"order": "recent", "unreviewed": "true", "limit": 1000},
        headers=reviewer,
        timeout=TIMEOUT,
    ).json()
    (mine,) = [p for p in queue if p["id"] == prediction_id]
    assert mine["image_sha256"] == sha
    image = httpx.get(f"{b}/predictions/{prediction_id}/image", headers=reviewer, timeout=TIMEOUT)
    assert image.status_code == 200 and image.content == photo
    given = httpx.post(f"{b}/feedback/{prediction_id}", json={"prdtypecode": 2583},
                       headers=reviewer, timeout=TIMEOUT)  # fmt: skip
    assert given.status_code == 201, given.text
    export = httpx.get(f"{b}/feedback/export", headers=reviewer, timeout=60)
    assert export.status_code == 200, export.text
    archive = zipfile.ZipFile(io.BytesIO(export.content))
    name = f"images/image_train/image_{fields['imageid']}_product_{fields['product_id']}.jpg"
    assert archive.read(name) == photo
    assert not (pair.state["b"] / "uploads").exists()

    # a token signed out on A is refused by B on its very next request
    bob = bearer(a, "bob")
    assert me(b, bob).status_code == 200
    assert httpx.post(f"{a}/token/revoke", headers=bob, timeout=TIMEOUT).status_code == 204
    refused = me(b, bob)
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]

    # one user's requests count once, wherever they land
    rate = bearer(a, "rate")
    answers = [me(url, rate) for url in (a, b) * 4]
    assert [answer.status_code for answer in answers] == [200] * BURST + [429] * 2
    assert f"rate limit of {PER_MINUTE} requests per minute" in answers[-1].json()["detail"]

    # photos sent without text, three to each replica: features and words read on them are
    # cached by the replica that saw them, each cache kept under its cap
    sent = {"a": [photo], "b": []}
    words = {"a": [], "b": []}
    for (name, url, user), batch in zip(
        (("a", a, poster), ("b", b, bearer(b, "sender"))),
        (sample_products.both[1:4], sample_products.both[4:7]),
    ):
        for _, product_photo in batch:
            _predict(url, user, product_photo)
            sent[name].append(product_photo)
            words[name].append(product_photo)
    for name in "ab":
        for cache, photos in (("feature-cache", sent[name]), ("ocr-cache", words[name])):
            root = pair.state[name] / cache
            assert _entries_bytes(root) <= CAP_MB * MIB, (name, cache)
            kept = {p.name for p in root.glob("*/*/*") if not p.name.endswith(".old")}
            for product_photo in photos:  # the newest entries stay, the old ones went first
                digest = hashlib.sha256(product_photo).hexdigest()
                assert any(entry.startswith(digest) for entry in kept), (name, cache)
            left = set(root.glob(f"{OLD_VERSION}/*/*.old"))
            assert left < pair.filled[name, cache], (name, cache, "nothing evicted")

    # both replicas report the run's end, read from the one Dagster instance
    ended = wait_for(
        lambda: (r := _latest(b, admin))["state"] not in ("queued", "running") and r,
        "B to report the retraining run ended",
        120,
        every=2.5,  # within the admin's rate limit
    )
    assert ended["id"] == run["id"]
    assert (ended["status"], ended["state"], ended["failure"]) == ("SUCCESS", "succeeded", None)
    on_a = _latest(a, admin)
    assert (on_a["id"], on_a["state"]) == (run["id"], "succeeded")
