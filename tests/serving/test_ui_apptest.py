"""The web app's pages (Streamlit AppTest) against a real API server on loopback, with the
models trained on real products: sign-in and roles, classify with a real photo, batch, review
queue, models, monitoring, the catalogue searched by words (a clip-style model's server, and the
champion's refusal), and the messages for an API that is down or a session that expired.
"""

from __future__ import annotations

import io
import uuid
import zipfile
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import prodclass.ui
from prodclass.settings import get_settings
from tests.servers import free_port, wait_for
from tests.serving.conftest import PASSWORDS, SERVER_JWT_SECRET, server_launcher

APP = str(prodclass.ui.__file__).replace("__init__.py", "app.py")


@pytest.fixture
def ui_settings(api_url, monkeypatch):
    monkeypatch.setenv("PRODCLASS_API_URL", api_url)
    get_settings.cache_clear()
    yield api_url
    get_settings.cache_clear()


def _token(api_url: str, role: str) -> str:
    answer = httpx.post(f"{api_url}/token", data={"username": role, "password": PASSWORDS[role]})
    return answer.json()["access_token"]


def _page(view: str, api_url: str, role: str) -> AppTest:
    """One page of the app, for a signed-in user of ``role``."""
    at = AppTest.from_string(
        f"from prodclass.ui.views import {view}\n{view}.render()\n", default_timeout=120
    )
    at.session_state["token"] = _token(api_url, role)
    at.session_state["role"] = role
    at.session_state["username"] = role
    return at.run()


def _text(at: AppTest) -> str:
    parts = [
        e.value
        for kind in (
            "markdown",
            "caption",
            "subheader",
            "header",
            "error",
            "warning",
            "info",
            "success",
        )
        for e in getattr(at, kind)
    ]
    return "\n".join(str(p) for p in parts)


def test_sign_in_refuses_a_wrong_password_then_lets_a_client_in(ui_settings):
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.text_input[0].input("client")
    at.text_input[1].input("wrong-password")
    at.button[0].click().run()
    assert "wrong user name or password" in at.error[0].value
    at.text_input[1].input(PASSWORDS["client"])
    at.button[0].click().run()
    assert at.session_state["role"] == "client"
    assert at.header[0].value == "Classify a product"
    assert "client" in " ".join(m.value for m in at.sidebar.markdown)


def test_an_api_that_is_down_is_a_clear_message(monkeypatch):
    monkeypatch.setenv("PRODCLASS_API_URL", f"http://127.0.0.1:{free_port()}")
    get_settings.cache_clear()
    try:
        at = AppTest.from_file(APP, default_timeout=60).run()
        at.text_input[0].input("client")
        at.text_input[1].input("whatever-password")
        at.button[0].click().run()
        assert "is not reachable" in at.error[0].value
    finally:
        get_settings.cache_clear()


@pytest.fixture
def cloud_secrets(api_url, monkeypatch):
    """Streamlit Community Cloud: the API address (and maybe an account) only in st.secrets;
    the environment points at a dead port, so the secrets must be what the app uses."""
    monkeypatch.setenv("PRODCLASS_API_URL", f"http://127.0.0.1:{free_port()}")
    for name in ("PRODCLASS_UI_USERNAME", "PRODCLASS_UI_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield {"PRODCLASS_API_URL": api_url}
    get_settings.cache_clear()


def _app_with_secrets(secrets: dict[str, str]) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for name, value in secrets.items():
        at.secrets[name] = value
    return at.run()


def test_secrets_give_the_api_address_and_users_sign_in_themselves(cloud_secrets):
    at = _app_with_secrets(cloud_secrets)
    assert "token" not in at.session_state
    assert cloud_secrets["PRODCLASS_API_URL"] in _text(at)
    at.text_input[0].input("reviewer")
    at.text_input[1].input(PASSWORDS["reviewer"])
    at.button[0].click().run()
    assert at.session_state["role"] == "reviewer"


def test_an_account_in_the_secrets_signs_in_by_itself_until_the_user_signs_out(cloud_secrets):
    account = {"PRODCLASS_UI_USERNAME": "client", "PRODCLASS_UI_PASSWORD": PASSWORDS["client"]}
    at = _app_with_secrets(cloud_secrets | account)
    assert at.session_state["role"] == "client"
    assert at.header[0].value == "Classify a product"
    token = at.session_state["token"]
    at.sidebar.button[0].click().run()  # sign out: to sign in as someone else
    assert "token" not in at.session_state
    me = httpx.get(
        f"{cloud_secrets['PRODCLASS_API_URL']}/users/me",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert me.status_code == 401 and "revoked" in me.json()["detail"]  # revoked on the API
    assert [t.label for t in at.text_input] == ["User name", "Password"]


def test_a_refused_account_in_the_secrets_is_explained(cloud_secrets):
    account = {"PRODCLASS_UI_USERNAME": "client", "PRODCLASS_UI_PASSWORD": "not-the-password"}
    at = _app_with_secrets(cloud_secrets | account)
    assert "token" not in at.session_state
    assert "Automatic sign-in as client failed" in at.warning[0].value
    assert "wrong user name or password" in at.warning[0].value


def test_classify_a_real_photo_shows_the_top5_and_the_model(ui_settings, sample_products, served):
    fields, photo = sample_products.both[0]
    at = _page("classify", ui_settings, "client")
    at.text_input(key="classify-designation").input(fields["designation"])
    at.file_uploader(key="classify-photo").upload("photo.jpg", photo, "image/jpeg")
    at.run()
    assert at.image, "the photo preview is shown"
    at.button[0].click().run()
    expected = httpx.post(
        f"{ui_settings}/predict",
        data={"designation": fields["designation"]},
        files={"image": ("photo.jpg", photo)},
        headers={"Authorization": f"Bearer {_token(ui_settings, 'client')}"},
    ).json()
    assert at.subheader[0].value.startswith(str(expected["prdtypecode"]))
    assert f"version {served.multimodal_version}" in _text(at) and "text+image" in _text(at)


def test_nothing_to_classify_and_a_file_that_is_not_a_photo_are_explained(ui_settings):
    at = _page("classify", ui_settings, "client")
    at.button[0].click().run()
    assert "Give a title, a description or a photo" in at.warning[0].value
    at.file_uploader(key="classify-photo").upload("photo.jpg", b"not an image", "image/jpeg")
    at.run()
    at.button[0].click().run()
    assert "not an image" in at.error[0].value


def test_an_expired_session_goes_back_to_sign_in(ui_settings):
    at = _page("classify", ui_settings, "client")
    settings = get_settings()
    past = datetime.now(UTC) - timedelta(hours=1)
    claims = {
        "sub": "client",
        "role": "client",
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": past - timedelta(hours=1),
        "exp": past,
        "jti": "expired-session",
    }
    at.session_state["token"] = jwt.encode(claims, SERVER_JWT_SECRET, algorithm="HS256")
    at.text_input(key="classify-designation").input("Piscine gonflable")
    at.button[0].click().run()
    assert "token" not in at.session_state
    assert "session expired" in at.session_state["notice"]


def test_batch_of_a_challenge_csv_and_its_photos(ui_settings, sample_products):
    rows, photos = {}, io.BytesIO()
    with zipfile.ZipFile(photos, "w") as archive:
        for fields, photo in sample_products.both[10:14]:
            archive.writestr(f"image_{fields['imageid']}_product_{fields['product_id']}.jpg", photo)
            rows[fields["product_identifier"]] = {
                "designation": fields["designation"],
                "description": "",
                "productid": fields["product_id"],
                "imageid": fields["imageid"],
            }
    rows["empty"] = {"designation": "", "description": "", "productid": "1", "imageid": "1"}
    csv = pd.DataFrame.from_dict(rows, orient="index").to_csv().encode()
    at = _page("batch", ui_settings, "client")
    at.file_uploader(key="batch-csv").upload("X_test.csv", csv, "text/csv")
    at.file_uploader(key="batch-photos").upload("photos.zip", photos.getvalue(), "application/zip")
    at.run()
    at.button[0].click().run()
    table = at.dataframe[0].value
    assert list(table.index) == list(rows)
    assert list(table["inputs"][:4]) == ["text+image"] * 4
    assert "no title" in table.loc["empty", "error"]
    assert at.get("download_button")


def test_batch_refuses_a_csv_without_the_challenge_columns(ui_settings):
    at = _page("batch", ui_settings, "client")
    at.file_uploader(key="batch-csv").upload("x.csv", b"a,b\n1,2\n", "text/csv")
    at.run()
    at.button[0].click().run()
    assert "lacks the columns" in at.error[0].value


def test_review_queue_confirms_in_one_click(ui_settings):
    client = {"Authorization": f"Bearer {_token(ui_settings, 'client')}"}
    for title in ("Lot de 3 figurines", "Coque de téléphone", "Tapis de yoga"):
        httpx.post(f"{ui_settings}/predict", data={"designation": title}, headers=client)
    reviewer = {"Authorization": f"Bearer {_token(ui_settings, 'reviewer')}"}
    first = httpx.get(f"{ui_settings}/predictions", params={"limit": 10}, headers=reviewer)
    first = first.json()[0]  # the least confident: the page's first card
    at = _page("review", ui_settings, "reviewer")
    assert at.markdown[0].value.strip("*") == (first["designation"] or "(no title)")
    at.button[0].click().run()  # the first card's "✓ <category>"
    assert "confirmed" in at.success[0].value
    latest = httpx.get(f"{ui_settings}/feedback", headers=reviewer).json()[0]
    assert latest["prediction_id"] == first["id"] and latest["is_correction"] is False
    assert latest["prdtypecode"] == first["prdtypecode"]


def test_models_page_shows_versions_metrics_and_the_confusion_matrix(ui_settings, served):
    at = _page("models", ui_settings, "admin")
    assert not at.exception
    assert f"version **{served.multimodal_version}**" in _text(at)
    at.selectbox[0].select(served.multimodal_version).run()
    assert [m.label for m in at.metric][:2] == ["Weighted F1", "Macro F1"]
    assert at.image, "the confusion matrix from MLflow is shown"
    assert "Cross-validated quality" in [h.value for h in at.subheader]
    assert "weighted F1 [95 %]" in at.dataframe[1].value.columns
    at.selectbox[0].select(served.text_version).run()
    assert "No evaluation report" in _text(at)


def test_monitoring_page_counts_predictions_and_shows_drift(ui_settings, served):
    from prodclass.monitoring import journal

    journal.write(
        served.settings.db_url,
        "drift",
        "drift on 99 products: inputs",
        {"drift": True, "drifted": ["inputs"]},
        "2",
    )
    # the predictions of the tests before, once the log writer has flushed them
    reviewer = {"Authorization": f"Bearer {_token(ui_settings, 'reviewer')}"}
    wait_for(
        lambda: (
            httpx.get(f"{ui_settings}/monitoring/summary", headers=reviewer)
            .json()
            .get("predictions", 0)
        ),
        "the prediction log to be written",
    )
    at = _page("monitoring", ui_settings, "reviewer")
    assert not at.exception
    assert at.metric[0].label == "Predictions" and int(at.metric[0].value) >= 1
    assert "drift on 99 products" in at.error[0].value


def _alert(status: str, name: str, starts: str) -> dict:
    """Alertmanager's webhook body (version 4) for one alert."""
    return {
        "version": "4",
        "status": status,
        "receiver": "prodclass-api",
        "alerts": [
            {
                "status": status,
                "labels": {"alertname": name, "severity": "warning"},
                "annotations": {"summary": f"{name} says so"},
                "startsAt": starts,
                "endsAt": "2026-12-01T09:30:00Z" if status == "resolved" else None,
                "fingerprint": uuid.uuid4().hex[:16],
            }
        ],
    }


def test_monitoring_page_shows_firing_alerts_before_resolved_ones(ui_settings, served):
    from prodclass.monitoring import journal

    journal.write(served.settings.db_url, "drift", "no drift on 42 products", {}, "2")
    admin = {"Authorization": f"Bearer {_token(ui_settings, 'admin')}"}
    firing = _alert("firing", "ProdclassOverloaded", "2026-12-01T08:00:00Z")
    resolved = _alert("resolved", "ProdclassSlowPredictions", "2026-12-01T09:00:00Z")
    # more alerts than the journal entries the page reads: the drift check is still found
    resolved["alerts"] += [
        _alert("resolved", "ProdclassModelLoadFailed", "2026-12-01T07:00:00Z")["alerts"][0]
        for _ in range(25)
    ]
    for body in (firing, resolved):  # the resolved ones are the newer
        answer = httpx.post(f"{ui_settings}/monitoring/alerts", json=body, headers=admin)
        assert answer.status_code == 200, answer.text
    at = _page("monitoring", ui_settings, "reviewer")
    assert not at.exception
    assert "no drift on 42 products" in " ".join(s.value for s in at.success)
    assert "Alerts" in [h.value for h in at.subheader]
    said = [e.value for e in at.error if "firing" in e.value]
    assert said and "ProdclassOverloaded" in said[0] and "ProdclassSlowPredictions" not in said[0]
    (table,) = [d.value for d in at.dataframe if "severity" in d.value.columns]
    names = list(table["name"])
    assert names.index("ProdclassOverloaded") < names.index("ProdclassSlowPredictions")
    assert table.set_index("name").loc["ProdclassSlowPredictions", "status"] == "resolved"


def test_monitoring_page_shows_the_ab_test_per_arm(ui_settings, served):
    admin = {"Authorization": f"Bearer {_token(ui_settings, 'admin')}"}
    body = {"challenger": served.text_version, "challenger_percent": 30}
    started = httpx.put(f"{ui_settings}/models/ab", json=body, headers=admin, timeout=300)
    assert started.status_code == 200, started.text
    try:
        products = [{"designation": "Tapis de jeu", "product_id": f"ui-{i}"} for i in range(30)]
        answered = httpx.post(
            f"{ui_settings}/predict/batch", json={"products": products}, headers=admin, timeout=120
        )
        assert answered.status_code == 200, answered.text
        at = _page("monitoring", ui_settings, "reviewer")
        assert not at.exception
        text = _text(at)
        assert "A/B test" in text
        assert f"Version {served.text_version} answers 30 % of the products" in text
        (arms,) = [d.value for d in at.dataframe if "arm" in d.value.columns]
        assert set(arms["arm"]) == {"champion", "challenger"}
        assert arms["predictions"].sum() == 30
    finally:
        httpx.delete(f"{ui_settings}/models/ab", headers=admin)


def test_search_asks_for_words_and_explains_a_model_without_a_shared_space(ui_settings):
    at = _page("search", ui_settings, "client")
    at.button[0].click().run()
    assert "Type a few words" in at.warning[0].value
    at.text_input(key="search-text").input("piscine gonflable")
    at.button[0].click().run()
    assert not at.image
    assert "late-fusion embeds texts and photos in separate spaces" in at.error[0].value


@pytest.fixture(scope="module")
def clip_api_url(served, clip_served, tmp_path_factory):
    """A real API server serving the tiny clip-style model and its catalogue index."""
    with server_launcher(served, tmp_path_factory.mktemp("clip-api")) as start:
        yield start(**clip_served.env())


def test_search_shows_the_photos_titles_and_scores_the_api_finds(clip_api_url, monkeypatch):
    monkeypatch.setenv("PRODCLASS_API_URL", clip_api_url)
    get_settings.cache_clear()
    try:
        at = _page("search", clip_api_url, "client")
        at.text_input(key="search-text").input("piscine gonflable")
        at.button[0].click().run()
    finally:
        get_settings.cache_clear()
    assert not at.exception and not at.error
    expected = httpx.get(
        f"{clip_api_url}/products/similar",
        params={"text": "piscine gonflable", "modality": "image", "k": 12},
        headers={"Authorization": f"Bearer {_token(clip_api_url, 'client')}"},
    ).json()["neighbours"]
    assert len(at.image) == len(expected) == 12  # every result with its photo
    titles = [m.value.removeprefix("**").removesuffix("**") for m in at.markdown]
    assert titles == [n["designation"] or "(no title)" for n in expected]
    captions = [c.value for c in at.caption]
    for n in expected:
        assert any(f"score {n['score']:.3f}" in c for c in captions), n
    assert "(clip-style)" in captions[-1]
