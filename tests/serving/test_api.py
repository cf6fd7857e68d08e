"""The API over HTTP (TestClient) with real models and real sample photos: each endpoint, each
role's permissions, bad input answered 4xx with a reason, the prediction log and feedback."""

from __future__ import annotations

import base64
import io
import json
import zipfile

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from prodclass.data.taxonomy import is_known
from prodclass.db.session import session_scope
from prodclass.db.tables import PredictionRecord
from tests.serving.conftest import PASSWORDS, login, wait_ready, wait_serving

# ---- system -------------------------------------------------------------------------------


def test_health_status_and_ready_need_no_login(client, served):
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/status").json()["status"] == "ok"
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["model_version"] == served.multimodal_version


def test_openapi_documents_every_route(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/predict",
        "/predict/batch",
        "/models/{version}/load",
        "/feedback/{prediction_id}",
        "/token",
        "/users",
        "/metrics",
        "/models/info",
        "/models/load/{version}",
    ):
        assert path in paths


# ---- authentication and roles ---------------------------------------------------------------


def test_wrong_password_and_missing_or_forged_token_are_refused(client):
    assert client.post("/token", data={"username": "admin", "password": "nope"}).status_code == 401
    assert client.post("/token", data={"username": "ghost", "password": "x" * 9}).status_code == 401
    assert client.post("/predict", data={"designation": "x"}).status_code == 401
    forged = {"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJl"}
    answer = client.post("/predict", data={"designation": "x"}, headers=forged)
    assert answer.status_code == 401 and "invalid token" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        ("client", {"predict"}),
        ("reviewer", {"predict", "feedback"}),
        ("admin", {"predict", "feedback", "users", "load"}),
    ],
)
def test_each_role_does_only_what_it_may(client, auth, served, role, allowed):
    headers = auth[role]
    predicted = client.post("/predict", data={"designation": "Console de jeux"}, headers=headers)
    assert predicted.status_code == 200
    prediction_id = predicted.json()["prediction_id"]
    feedback = client.post(f"/feedback/{prediction_id}", json={"prdtypecode": 60}, headers=headers)
    assert feedback.status_code == (201 if "feedback" in allowed else 403), feedback.text
    users = client.get("/users", headers=headers)
    assert users.status_code == (200 if "users" in allowed else 403)
    load = client.post(f"/models/{served.multimodal_version}/load", headers=headers)
    assert load.status_code == (202 if "load" in allowed else 403)
    if load.status_code == 202:
        assert (
            wait_serving(client, headers, served.multimodal_version)["last_load"]["state"]
            == "serving"
        )
    if "load" not in allowed:
        assert "may not" in load.json()["detail"]


def _predict(client: TestClient, headers: dict, data: dict, photo: bytes | None = None):
    """POST /predict as a browser form would: fields, and the photo as a file part."""
    files = {"image": ("p.jpg", photo, "image/jpeg")} if photo is not None else None
    return client.post("/predict", data=data, files=files, headers=headers)


# ---- predictions ------------------------------------------------------------------------------


def _check_answer(body: dict, served, inputs: str, k: int = 5) -> None:
    assert body["inputs"] == inputs
    assert body["model"]["version"] == served.multimodal_version
    assert body["model"]["family"] == "late-fusion"
    top = body["top"]
    assert (
        len(top) == k
        and body["category"] == top[0]
        and body["prdtypecode"] == top[0]["prdtypecode"]
    )
    probabilities = [c["probability"] for c in top]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1.0001
    assert all(is_known(c["prdtypecode"]) and c["name_fr"] for c in top)


def test_predict_text_only_photo_only_and_both(client, auth, served, sample_products):
    fields, photo = sample_products.both[0]
    text_only = client.post("/predict", data=fields, headers=auth["client"])
    _check_answer(text_only.json(), served, "text")
    assert text_only.json()["product_id"] == fields["product_id"]
    assert text_only.json()["product_identifier"] == fields["product_identifier"]
    photo_only = _predict(client, auth["client"], {}, photo)
    _check_answer(photo_only.json(), served, "image")
    both = _predict(client, auth["client"], fields | {"top_k": "3"}, photo)
    _check_answer(both.json(), served, "text+image", k=3)


def test_the_photo_changes_the_answer(client, auth, sample_products):
    """The served model reads the photo: the same title with two different photos differs."""
    tops = set()
    for _, photo in sample_products.both[:6]:
        answer = _predict(client, auth["client"], {"designation": "article"}, photo)
        tops.add(tuple(c["probability"] for c in answer.json()["top"]))
    assert len(tops) > 1


def _jpeg(size=(64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _bomb() -> bytes:
    """A tiny PNG that declares 20,000 x 20,000 pixels."""
    buffer = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "photo", "status", "reason"),
    [
        (
            {"designation": "", "description": ""},
            None,
            422,
            "no title, no description and no photo",
        ),
        ({}, b"this is not a photo", 422, "not an image"),
        ({}, _jpeg()[:300], 422, "corrupt image"),
        ({}, _bomb(), 422, "too large"),
        ({"designation": "x", "top_k": "many"}, None, 422, "top_k"),
        ({"designation": "x", "top_k": "99"}, None, 422, "top_k"),
    ],
    ids=[
        "empty",
        "not-an-image",
        "truncated-jpeg",
        "decompression-bomb",
        "top-k-type",
        "top-k-range",
    ],
)
def test_bad_input_is_a_4xx_with_a_reason(client, auth, data, photo, status, reason):
    files = {"image": ("p.jpg", photo, "image/jpeg")} if photo is not None else None
    answer = client.post("/predict", data=data, files=files, headers=auth["client"])
    assert answer.status_code == status, answer.text
    assert reason in json.dumps(answer.json())


def test_huge_upload_is_refused_before_it_is_read(client, auth, served):
    limit = served.settings.api_max_upload_bytes
    big = b"\xff\xd8" + b"0" * (limit + 2 * 1024 * 1024)
    answer = _predict(client, auth["client"], {}, big)
    assert answer.status_code == 413 and "limit" in answer.json()["detail"]


def test_batch_json_with_base64_photos(client, auth, served, sample_products):
    products = []
    for fields, photo in sample_products.both[:5]:
        products.append(fields | {"image_base64": base64.b64encode(photo).decode()})
    products.append({"designation": "Lot de 3 cartes Pokémon"})
    answer = client.post(
        "/predict/batch", json={"products": products, "top_k": 2}, headers=auth["client"]
    )
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert [p["product_id"] for p in predictions] == [p.get("product_id") for p in products]
    assert [p["inputs"] for p in predictions] == ["text+image"] * 5 + ["text"]
    assert all(len(p["top"]) == 2 for p in predictions)


def test_batch_json_names_every_bad_product(client, auth, served):
    products = [
        {"designation": "ok"},
        {"image_base64": "%%%"},
        {"designation": ""},
        {"image_base64": base64.b64encode(b"text").decode()},
    ]
    answer = client.post("/predict/batch", json={"products": products}, headers=auth["client"])
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    for position in (1, 2, 3):
        assert f"product {position}" in detail
    too_many = [{"designation": "x"}] * (served.settings.api_max_products_per_request + 1)
    answer = client.post("/predict/batch", json={"products": too_many}, headers=auth["client"])
    assert answer.status_code == 413 and "zip" in answer.json()["detail"]
    wrong_type = client.post("/predict/batch", json={"products": "x"}, headers=auth["client"])
    assert wrong_type.status_code == 422


def test_batch_zip_in_the_challenge_layout_streams_ndjson(client, auth, sample_products):
    buffer = io.BytesIO()
    rows = {}
    with zipfile.ZipFile(buffer, "w") as archive:
        for fields, photo in sample_products.both[:4]:
            name = f"image_{fields['imageid']}_product_{fields['product_id']}.jpg"
            archive.writestr(f"images/image_test/{name}", photo)
            rows[fields["product_identifier"]] = {
                "designation": "" if len(rows) == 0 else fields["designation"],
                "description": fields["description"],
                "productid": fields["product_id"],
                "imageid": fields["imageid"],
            }
        rows["empty"] = {"designation": "", "description": "", "productid": "1", "imageid": "1"}
        archive.writestr("X_test_update.csv", pd.DataFrame.from_dict(rows, orient="index").to_csv())
    answer = client.post(
        "/predict/batch/zip",
        files={"archive": ("batch.zip", buffer.getvalue(), "application/zip")},
        headers=auth["client"],
    )
    assert answer.status_code == 200
    lines = [json.loads(line) for line in answer.text.splitlines()]
    assert [line["row"] for line in lines] == list(rows)
    assert [line.get("inputs") for line in lines] == ["image"] + ["text+image"] * 3 + [None]
    assert "no title" in lines[-1]["error"]
    not_a_zip = client.post(
        "/predict/batch/zip",
        files={"archive": ("x.zip", b"PK nope", "application/zip")},
        headers=auth["client"],
    )
    assert not_a_zip.status_code == 422 and "not a zip" in not_a_zip.json()["detail"]


# ---- models -----------------------------------------------------------------------------------


def test_models_list_current_and_seed_aliases(client, auth, served):
    listed = client.get("/models", headers=auth["client"]).json()
    assert {m["version"] for m in listed} >= {served.text_version, served.multimodal_version}
    assert client.get("/models/info", headers=auth["client"]).json() == listed
    current = client.get("/models/current", headers=auth["client"]).json()
    assert current["serving"]["version"] == served.multimodal_version
    for path in ("/models/99/load", "/models/load/99", "/models/abc/load"):
        answer = client.post(path, headers=auth["admin"])
        assert answer.status_code == 404 and "version" in answer.json()["detail"]


def test_hot_swap_and_a_broken_version_is_refused(client, auth, served):
    admin = auth["admin"]
    answer = client.post(f"/models/load/{served.text_version}", headers=admin)  # seed alias
    assert answer.status_code == 202 and answer.json()["state"] == "loading"
    current = wait_serving(client, admin, served.text_version)
    assert current["serving"]["version"] == served.text_version
    assert (
        client.post("/predict", data={"designation": "Figurine"}, headers=admin).json()["model"][
            "family"
        ]
        == "tfidf-linear"
    )
    before = _metric(client, "prodclass_model_load_failures_total")
    assert client.post(f"/models/{served.broken_version}/load", headers=admin).status_code == 202
    current = wait_serving(client, admin, served.broken_version)
    assert current["last_load"]["state"] == "failed" and current["last_load"]["error"]
    assert current["serving"]["version"] == served.text_version  # the old one keeps serving
    assert _metric(client, "prodclass_model_load_failures_total") == before + 1
    client.post(f"/models/{served.multimodal_version}/load", headers=admin)
    assert wait_serving(client, admin, "")["serving"]["version"] == served.multimodal_version


def test_promote_and_rollback_move_the_champion_and_what_serves(client, auth, served):
    admin = auth["admin"]
    assert (
        client.post(f"/models/{served.text_version}/promote", headers=auth["reviewer"]).status_code
        == 403
    )
    promoted = client.post(f"/models/{served.text_version}/promote", headers=admin)
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["previous_champion"] == served.multimodal_version
    assert wait_serving(client, admin, "")["serving"]["version"] == served.text_version
    champion = {m["version"]: m["aliases"] for m in client.get("/models", headers=admin).json()}
    assert "champion" in champion[served.text_version]
    rolled = client.post("/models/rollback", headers=admin)
    assert rolled.status_code == 200 and rolled.json()["champion"] == served.multimodal_version
    assert wait_serving(client, admin, "")["serving"]["version"] == served.multimodal_version
    assert client.post("/models/42/promote", headers=admin).status_code == 404


# ---- feedback and the prediction log -----------------------------------------------------------


def test_feedback_corrects_and_exports_in_the_challenge_layout(
    client, auth, served, sample_products
):
    fields, photo = sample_products.both[1]
    predicted = _predict(client, auth["client"], fields, photo).json()
    wrong = next(c for c in (10, 2583) if c != predicted["prdtypecode"])
    feedback = client.post(
        f"/feedback/{predicted['prediction_id']}",
        json={"prdtypecode": wrong, "comment": "wrong shelf"},
        headers=auth["reviewer"],
    )
    assert feedback.status_code == 201 and feedback.json()["is_correction"] is True
    assert (
        client.post(
            "/feedback/nope", json={"prdtypecode": 10}, headers=auth["reviewer"]
        ).status_code
        == 404
    )
    unknown = client.post(
        f"/feedback/{predicted['prediction_id']}",
        json={"prdtypecode": 11},
        headers=auth["reviewer"],
    )
    assert unknown.status_code == 422 and "27" in unknown.json()["detail"]
    listed = client.get("/feedback?corrections_only=true", headers=auth["reviewer"]).json()
    assert listed[0]["prediction_id"] == predicted["prediction_id"]
    export = client.get("/feedback/export", headers=auth["reviewer"])
    archive = zipfile.ZipFile(io.BytesIO(export.content))
    x = pd.read_csv(archive.open("X_train_update.csv"), index_col=0, dtype=str)
    y = pd.read_csv(archive.open("Y_train_CVw08PX.csv"), index_col=0)
    exported = x.index[x["productid"] == fields["product_id"]][0]
    assert y.loc[int(exported), "prdtypecode"] == wrong
    photo_name = f"images/image_train/image_{fields['imageid']}_product_{fields['product_id']}.jpg"
    assert archive.read(photo_name) == photo


def test_every_prediction_is_logged_with_its_photo(client, auth, served, sample_products):
    fields, photo = sample_products.both[2]
    answer = _predict(client, auth["client"], fields, photo).json()
    client.app.state.services.prediction_log.flush()
    with session_scope(served.settings.db_url) as session:
        record = session.scalar(
            select(PredictionRecord).where(PredictionRecord.id == answer["prediction_id"])
        )
        assert record is not None
        assert (record.username, record.model_version) == ("client", served.multimodal_version)
        assert (
            record.designation == fields["designation"]
            and record.prdtypecode == answer["prdtypecode"]
        )
        assert record.top[0]["prdtypecode"] == answer["prdtypecode"] and record.latency_ms > 0
        stored = served.settings.upload_dir / record.image_sha256[:2] / record.image_sha256
    assert stored.read_bytes() == photo


def test_review_queue_least_confident_first_with_photos(client, auth, served, sample_products):
    for fields, photo in sample_products.both[4:9]:
        _predict(client, auth["client"], fields, photo)
    assert client.get("/predictions", headers=auth["client"]).status_code == 403
    queue = client.get("/predictions", params={"limit": 100}, headers=auth["reviewer"]).json()
    confidences = [p["probability"] for p in queue]
    assert len(queue) >= 5 and confidences == sorted(confidences)
    assert not any(p["reviewed"] for p in queue)
    first = queue[0]
    client.post(
        f"/feedback/{first['id']}",
        json={"prdtypecode": first["prdtypecode"]},
        headers=auth["reviewer"],
    )
    again = client.get("/predictions", params={"limit": 100}, headers=auth["reviewer"]).json()
    assert first["id"] not in [p["id"] for p in again]
    with_photo = next(p for p in again if p["image_sha256"])
    image = client.get(f"/predictions/{with_photo['id']}/image", headers=auth["reviewer"])
    assert image.status_code == 200 and image.content[:2] == b"\xff\xd8"
    recent = client.get(
        "/predictions", params={"order": "recent", "unreviewed": "false"}, headers=auth["reviewer"]
    ).json()
    stamps = [p["created_at"] for p in recent]
    assert stamps == sorted(stamps, reverse=True)


def test_monitoring_summary_of_volume_latency_and_class_mix(client, auth):
    client.post("/predict", data={"designation": "Piscine gonflable"}, headers=auth["client"])
    summary = client.get(
        "/monitoring/summary", params={"hours": 1, "bucket_minutes": 5}, headers=auth["reviewer"]
    ).json()
    assert summary["predictions"] >= 1
    assert sum(b["predictions"] for b in summary["timeline"]) == summary["predictions"]
    assert all(b["latency_ms_p95"] >= 0 for b in summary["timeline"])
    training = [c["training"] for c in summary["classes"] if c["training"] is not None]
    assert len(training) == 27 and abs(sum(training) - 1) < 1e-4
    assert abs(sum(c["predicted"] for c in summary["classes"]) - 1) < 1e-4
    assert client.get("/monitoring/summary", headers=auth["client"]).status_code == 403


def test_monitoring_journal_lists_checks_and_decisions(client, auth, served):
    from prodclass.monitoring import journal

    details = {"drift": True, "drifted": ["inputs"], "tests": []}
    journal.write(served.settings.db_url, "drift", "drift on 120 products: inputs", details, "2")
    entries = client.get(
        "/monitoring/journal", params={"kind": "drift"}, headers=auth["reviewer"]
    ).json()
    assert entries[0]["summary"] == "drift on 120 products: inputs"
    assert entries[0]["details"]["drifted"] == ["inputs"]
    assert client.get("/monitoring/journal", headers=auth["client"]).status_code == 403
    wrong = client.get("/monitoring/journal", params={"kind": "x"}, headers=auth["reviewer"])
    assert wrong.status_code == 422


def test_model_report_and_confusion_matrix_from_mlflow(client, auth, served):
    report = client.get(f"/models/{served.multimodal_version}/report", headers=auth["client"])
    assert report.status_code == 200
    assert 0 < report.json()["weighted_f1"] <= 1 and len(report.json()["per_class"]) == 27
    image = client.get(
        f"/models/{served.multimodal_version}/confusion-matrix", headers=auth["client"]
    )
    assert image.status_code == 200 and image.content[:4] == b"\x89PNG"
    missing = client.get(f"/models/{served.text_version}/report", headers=auth["client"])
    assert missing.status_code == 404 and "test_metrics.json" in missing.json()["detail"]


def test_model_evidence_is_the_cross_validated_quality(client, auth, served):
    answer = client.get(f"/models/{served.text_version}/evidence", headers=auth["client"])
    assert answer.status_code == 200, answer.text
    evidence = answer.json()
    assert evidence["promotion"] is None  # registered directly, not by the promotion rule
    overall = evidence["cv"]["scores"]["all"]["weighted_f1"]
    assert 0 < overall["low"] <= overall["mean"] <= overall["high"] <= 1
    assert client.get("/models/999/evidence", headers=auth["client"]).status_code == 404


# ---- users --------------------------------------------------------------------------------------


def test_admin_manages_users_and_a_disabled_user_cannot_log_in(client, auth):
    admin = auth["admin"]
    created = client.post(
        "/users",
        json={"username": "ana", "password": "long-enough-1", "role": "client"},
        headers=admin,
    )
    assert created.status_code == 201 and created.json()["role"] == "client"
    assert "password" not in json.dumps(created.json())
    for body, reason in (
        ({"username": "ana", "password": "long-enough-1", "role": "client"}, "already exists"),
        ({"username": "bob", "password": "short", "role": "client"}, "at least"),
        ({"username": "bob", "password": "long-enough-1", "role": "root"}, "unknown role"),
        ({"username": "bad name!", "password": "long-enough-1", "role": "client"}, "username"),
    ):
        answer = client.post("/users", json=body, headers=admin)
        assert answer.status_code == 400 and reason in answer.json()["detail"]
    promoted = client.patch("/users/ana", json={"role": "reviewer"}, headers=admin)
    assert promoted.json()["role"] == "reviewer"
    assert (
        login(client, "admin")
        and client.post("/token", data={"username": "ana", "password": "long-enough-1"}).json()[
            "role"
        ]
        == "reviewer"
    )
    client.patch("/users/ana", json={"is_active": False}, headers=admin)
    assert (
        client.post("/token", data={"username": "ana", "password": "long-enough-1"}).status_code
        == 401
    )
    assert client.delete("/users/ana", headers=admin).status_code == 204
    assert client.get("/users/ana", headers=admin).status_code == 404
    assert client.delete("/users/admin", headers=admin).status_code == 400
    assert client.get("/users/me", headers=auth["client"]).json()["username"] == "client"


# ---- limits and metrics ---------------------------------------------------------------


def test_rate_limit_per_user_answers_429_with_retry_after(served):
    settings = served.settings.model_copy(
        update={"api_rate_limit_per_minute": 60, "api_rate_limit_burst": 3}
    )
    from prodclass.serving.api.app import create_app

    with TestClient(create_app(settings)) as limited:
        wait_ready(limited)
        client_headers = login(limited, "client")
        codes = [
            limited.post("/predict", data={"designation": "x"}, headers=client_headers).status_code
            for _ in range(4)
        ]
        assert codes == [200, 200, 200, 429]
        refused = limited.post("/predict", data={"designation": "x"}, headers=client_headers)
        assert int(refused.headers["Retry-After"]) >= 1 and "rate limit" in refused.json()["detail"]
        # another user has its own bucket
        other = login(limited, "reviewer")
        assert limited.post("/predict", data={"designation": "x"}, headers=other).status_code == 200


def _metric(client: TestClient, name: str, **labels: str) -> float:
    total = 0.0
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            head = line.split(" ")[0]
            if head == name or head.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_count_requests_predictions_and_model(client, auth, served):
    before = _metric(client, "prodclass_http_requests_total", route="/predict", status="200")
    client.post("/predict", data={"designation": "Piscine gonflable"}, headers=auth["client"])
    client.post("/predict", data={}, headers=auth["client"])
    assert (
        _metric(client, "prodclass_http_requests_total", route="/predict", status="200")
        == before + 1
    )
    assert _metric(client, "prodclass_http_requests_total", route="/predict", status="422") >= 1
    assert _metric(client, "prodclass_predicted_class_total") >= 1
    assert _metric(client, "prodclass_prediction_batch_size_count") >= 1
    assert _metric(client, "prodclass_model_info", version=served.multimodal_version) == 1
    assert _metric(client, "prodclass_http_request_duration_seconds_count", route="/predict") >= 2
    text = client.get("/metrics").text
    assert "prodclass_prediction_log_backlog" in text and "prodclass_prediction_queue_depth" in text


def test_passwords_are_hashed_with_argon2(served):
    from prodclass.db.users import get_user

    with session_scope(served.settings.db_url) as session:
        user = get_user(session, "admin")
        assert (
            user.password_hash.startswith("$argon2")
            and PASSWORDS["admin"] not in user.password_hash
        )
