"""Replicas share the photos clients send through the photo bucket (PRODCLASS_PHOTO_STORE_URL,
moto's S3 server over HTTP). A photo posted to one API app lands in the bucket, not in its
state folder; a second app with an empty state folder of its own, on the same database and
bucket, shows it in its review queue, serves it on the photo route and puts it in the
feedback export; the drift check's products and `prodclass feedback export` run elsewhere
read it from the bucket too."""

from __future__ import annotations

import hashlib
import io
import subprocess
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from fastapi.testclient import TestClient

from prodclass.monitoring.check import logged_products
from prodclass.photo_store import open_photo_store
from prodclass.serving.api.app import create_app
from prodclass.settings import Settings
from tests.servers import DUMMY_AWS, S3Bucket, wait_for
from tests.serving.conftest import PRODCLASS, Served, login, server_env, wait_ready

PREFIX = "uploads"


def replica(served: Served, bucket: S3Bucket, state: Path, model_uri: str) -> Settings:
    """One replica's settings: its own state folder, the shared database, registry, bucket."""
    return served.settings.model_copy(
        update={
            "state_dir": state,
            "database_url": served.settings.db_url,
            "mlflow_tracking_uri": served.settings.tracking_uri,
            "model_uri": model_uri,
            "photo_store_url": f"s3://{bucket.name}/{PREFIX}",
            "s3_endpoint_url": bucket.endpoint,
            "model_poll_seconds": 0.0,
            "monitoring_refresh_seconds": 0.0,
        }
    )


def test_a_photo_sent_to_one_replica_is_seen_by_another(
    served: Served, s3_bucket: S3Bucket, sample_products, tmp_path: Path
):
    fields, photo = sample_products.both[30]
    sha = hashlib.sha256(photo).hexdigest()
    started = datetime.now(UTC) - timedelta(seconds=1)
    serving = f"models:/{served.settings.registered_model_name}/{served.multimodal_version}"
    first = replica(served, s3_bucket, tmp_path / "a", serving)
    with TestClient(create_app(first)) as a:
        wait_ready(a)
        answer = a.post("/predict", data=fields, files={"image": ("p.jpg", photo, "image/jpeg")},
                        headers=login(a, "client"))  # fmt: skip
        assert answer.status_code == 200, answer.text
        prediction_id = answer.json()["prediction_id"]
        key = f"{PREFIX}/{sha[:2]}/{sha}"
        stored = wait_for(lambda: s3_bucket.objects().get(key), "the photo in the bucket", 30)
        assert stored == photo
        a.app.state.services.prediction_log.flush()  # the record follows its photo
    assert not (tmp_path / "a" / "uploads").exists()  # nothing kept on the replica itself

    # another replica: an empty state folder, no model (its routes here need none)
    second = replica(served, s3_bucket, tmp_path / "b", str(tmp_path / "no-model"))
    with TestClient(create_app(second)) as b:
        reviewer = login(b, "reviewer")
        queue = b.get(
            "/predictions",
            params={"order": "recent", "unreviewed": "false", "limit": 1000},
            headers=reviewer,
        ).json()
        (mine,) = [p for p in queue if p["id"] == prediction_id]
        assert mine["image_sha256"] == sha
        image = b.get(f"/predictions/{prediction_id}/image", headers=reviewer)
        assert image.status_code == 200 and image.content == photo
        assert image.headers["content-type"] == "image/jpeg"
        correction = 10 if answer.json()["prdtypecode"] != 10 else 2583
        given = b.post(f"/feedback/{prediction_id}", json={"prdtypecode": correction},
                       headers=reviewer)  # fmt: skip
        assert given.status_code == 201, given.text
        export = b.get("/feedback/export", headers=reviewer)
        archive = zipfile.ZipFile(io.BytesIO(export.content))
        name = f"images/image_train/image_{fields['imageid']}_product_{fields['product_id']}.jpg"
        assert archive.read(name) == photo
    assert not (tmp_path / "b" / "uploads").exists()

    # the drift check's products, where the models read photos from files
    logged = logged_products(second.db_url, open_photo_store(second), started, tmp_path / "s")
    files = [Path(path) for path in logged["image_path"] if path]
    assert [f.read_bytes() for f in files] == [photo] and files[0].parent == tmp_path / "s"

    # `prodclass feedback export` on a machine that never saw the photo
    out = tmp_path / "export"
    env = server_env(served) | DUMMY_AWS | {
        "PRODCLASS_STATE_DIR": str(tmp_path / "c"),
        "PRODCLASS_DATABASE_URL": served.settings.db_url,
        "PRODCLASS_PHOTO_STORE_URL": first.photo_store_url or "",
        "PRODCLASS_S3_ENDPOINT_URL": s3_bucket.endpoint,
    }  # fmt: skip
    done = subprocess.run([*PRODCLASS, "feedback", "export", str(out)], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    x = pd.read_csv(out / "X_train_update.csv", index_col=0, dtype=str)
    assert fields["product_id"] in set(x["productid"])
    assert (out / name).read_bytes() == photo
