"""Who gets in: every route × every role, tokens that must be refused (tampered, expired,
"none" algorithm, wrong issuer or audience, revoked), sign-in backoff without user
enumeration, and user emails encrypted at rest — against the real app and database."""

from __future__ import annotations

import base64
import io
import json
import statistics
import time
import zipfile
from pathlib import Path

import jwt
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from prodclass.db.session import session_scope
from prodclass.db.tables import User
from prodclass.serving.api.app import create_app
from tests.serving.conftest import PASSWORDS, login

ROLES = ("client", "reviewer", "admin")
PUBLIC = "public"
# The least role of every operation of the API. A new route must be added here: the first
# test fails for an operation the table does not know.
LEAST_ROLE = {
    ("GET", "/health"): PUBLIC,
    ("GET", "/status"): PUBLIC,
    ("GET", "/ready"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("POST", "/token"): PUBLIC,
    ("POST", "/token/revoke"): "client",
    ("GET", "/users/me"): "client",
    ("GET", "/users"): "admin",
    ("POST", "/users"): "admin",
    ("GET", "/users/{username}"): "admin",
    ("PATCH", "/users/{username}"): "admin",
    ("DELETE", "/users/{username}"): "admin",
    ("POST", "/predict"): "client",
    ("POST", "/predict/batch"): "client",
    ("POST", "/predict/batch/zip"): "client",
    ("POST", "/predict/similarity"): "client",
    ("GET", "/products/similar"): "client",
    ("POST", "/products/similar"): "client",
    ("GET", "/products/{row_id}/image"): "client",
    ("GET", "/models"): "client",
    ("GET", "/models/info"): "client",
    ("GET", "/models/current"): "client",
    ("POST", "/models/{version}/load"): "admin",
    ("POST", "/models/load/{version}"): "admin",
    ("GET", "/models/{version}/report"): "client",
    ("GET", "/models/{version}/evidence"): "client",
    ("GET", "/models/{version}/confusion-matrix"): "client",
    ("POST", "/models/{version}/promote"): "admin",
    ("POST", "/models/rollback"): "admin",
    ("GET", "/models/ab"): "reviewer",
    ("PUT", "/models/ab"): "admin",
    ("POST", "/models/ab"): "admin",
    ("DELETE", "/models/ab"): "admin",
    ("POST", "/models/ab/promote"): "admin",
    ("POST", "/training/runs"): "admin",
    ("GET", "/training/runs/latest"): "admin",
    ("GET", "/predictions"): "reviewer",
    ("GET", "/predictions/{prediction_id}/image"): "reviewer",
    ("POST", "/feedback/{prediction_id}"): "reviewer",
    ("GET", "/feedback"): "reviewer",
    ("GET", "/feedback/export"): "reviewer",
    ("GET", "/monitoring/journal"): "reviewer",
    ("GET", "/monitoring/summary"): "reviewer",
    ("GET", "/monitoring/alerts"): "reviewer",
    ("POST", "/monitoring/alerts"): "admin",  # or Alertmanager's shared token
}
# Called with an allowed role they would act on shared state (start a training run, move the
# champion alias): their allowed side is covered in test_api.py, their refusals here.
SIDE_EFFECTS = {
    ("POST", "/training/runs"),
    ("POST", "/models/rollback"),
    ("DELETE", "/models/ab"),
    ("POST", "/models/ab/promote"),
}
PLACEHOLDERS = {
    "{username}": "nobody-here",
    "{version}": "999",
    "{prediction_id}": "00000000-0000-0000-0000-000000000000",
    "{row_id}": "no-such-row",
}


def _url(path: str) -> str:
    for name, value in PLACEHOLDERS.items():
        path = path.replace(name, value)
    return path


def _mint(client: TestClient, role: str) -> dict[str, str]:
    """A fresh token of ``role`` (a revoke call must not spoil the next check)."""
    token = client.app.state.services.tokens.issue(role, role)
    return {"Authorization": f"Bearer {token}"}


def test_the_role_table_covers_every_operation_of_the_api(client):
    operations = {
        (method.upper(), path)
        for path, methods in client.get("/openapi.json").json()["paths"].items()
        for method in methods
    }
    assert operations == set(LEAST_ROLE)


@pytest.mark.parametrize(("method", "path"), sorted(LEAST_ROLE), ids="{0[0]} {0[1]}".format)
def test_every_route_lets_in_exactly_the_roles_it_should(client, method, path):
    least = LEAST_ROLE[(method, path)]
    url = _url(path)
    anonymous = client.request(method, url)
    if least == PUBLIC:
        assert anonymous.status_code not in (401, 403), anonymous.text
        return
    assert anonymous.status_code == 401, anonymous.text
    allowed = ROLES[ROLES.index(least) :]
    for role in ROLES:
        if role in allowed and (method, path) in SIDE_EFFECTS:
            continue
        answer = client.request(method, url, headers=_mint(client, role))
        if role in allowed:  # past the role check: the body or the placeholder may be refused
            assert answer.status_code not in (401, 403), (role, answer.text)
        else:
            assert answer.status_code == 403, (role, answer.text)
            assert "may not" in answer.json()["detail"]


# ---- tokens -------------------------------------------------------------------------------


def _claims(client: TestClient, **changes) -> dict:
    tokens = client.app.state.services.tokens
    now = time.time()
    claims = {
        "sub": "admin",
        "role": "admin",
        "iss": tokens.issuer,
        "aud": tokens.audience,
        "iat": now,
        "exp": int(now + 600),
        "jti": "t-" + str(now),
    }
    return {k: v for k, v in (claims | changes).items() if v is not None}


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _refused(client: TestClient, token: str) -> str:
    answer = client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 401, answer.text
    return answer.json()["detail"]


def test_a_token_signed_with_the_real_key_is_accepted(client):
    secret = client.app.state.services.tokens.secret
    token = jwt.encode(_claims(client), secret, algorithm="HS256")
    answer = client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200 and answer.json()["username"] == "admin"


def test_tampered_expired_unsigned_and_foreign_tokens_are_refused(client):
    secret = client.app.state.services.tokens.secret
    good = jwt.encode(_claims(client, sub="client", role="client"), secret, algorithm="HS256")
    header, _, signature = good.split(".")
    promoted = _b64(_claims(client, sub="client", role="admin"))  # same signature, new role
    assert "invalid token" in _refused(client, f"{header}.{promoted}.{signature}")

    expired = _claims(client, exp=int(time.time() - 60))
    assert "expired" in _refused(client, jwt.encode(expired, secret, algorithm="HS256"))

    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(client))}."
    assert "invalid token" in _refused(client, unsigned)
    other_algorithm = jwt.encode(_claims(client), secret, algorithm="HS512")
    assert "invalid token" in _refused(client, other_algorithm)

    other_key = jwt.encode(_claims(client), "another-key-" + "z" * 32, algorithm="HS256")
    assert "invalid token" in _refused(client, other_key)
    for claim, value in (("iss", "someone-else"), ("aud", "another-api")):
        token = jwt.encode(_claims(client, **{claim: value}), secret, algorithm="HS256")
        assert "invalid token" in _refused(client, token)
    for missing in ("exp", "jti", "aud", "iss"):
        token = jwt.encode(_claims(client, **{missing: None}), secret, algorithm="HS256")
        assert "invalid token" in _refused(client, token)


def test_a_signed_out_token_is_refused_and_a_new_sign_in_works(client):
    headers = login(client, "reviewer")
    assert client.get("/users/me", headers=headers).status_code == 200
    assert client.post("/token/revoke", headers=headers).status_code == 204
    assert "revoked" in _refused(client, headers["Authorization"].split()[1])
    assert client.get("/users/me", headers=login(client, "reviewer")).status_code == 200


def test_changing_a_users_role_or_password_revokes_its_tokens(client, auth):
    created = client.post(
        "/users",
        json={"username": "temp-worker", "password": "temp-password-1", "role": "reviewer"},
        headers=auth["admin"],
    )
    assert created.status_code == 201, created.text
    token = client.post(
        "/token", data={"username": "temp-worker", "password": "temp-password-1"}
    ).json()["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert client.get("/predictions", headers=bearer).status_code == 200
    demoted = client.patch("/users/temp-worker", json={"role": "client"}, headers=auth["admin"])
    assert demoted.status_code == 200
    assert "revoked" in _refused(client, token)  # not a reviewer any more, at once
    fresh = client.post("/token", data={"username": "temp-worker", "password": "temp-password-1"})
    assert fresh.json()["role"] == "client"


# ---- passwords ----------------------------------------------------------------------------


def _sign_in(client: TestClient, username: str, password: str):
    return client.post("/token", data={"username": username, "password": password})


def test_unknown_user_and_wrong_password_look_the_same(client):
    def timed(username: str) -> tuple[int, str, float]:
        start = time.perf_counter()
        answer = _sign_in(client, username, "wrong-password-9")
        return answer.status_code, answer.json()["detail"], time.perf_counter() - start

    known = [timed("client") for _ in range(3)]
    unknown = [timed(f"ghost-{i}") for i in range(3)]
    assert {(code, detail) for code, detail, _ in known} == {
        (code, detail) for code, detail, _ in unknown
    }
    # both verify an argon2 hash: the timings are of the same order
    ratio = statistics.median(t for *_, t in known) / statistics.median(t for *_, t in unknown)
    assert 0.33 < ratio < 3, ratio
    assert _sign_in(client, "client", PASSWORDS["client"]).status_code == 200  # clears its count


def test_repeated_failures_lock_the_user_name_with_retry_after(client, auth):
    client.post(
        "/users",
        json={"username": "target", "password": "target-password-1", "role": "client"},
        headers=auth["admin"],
    )
    limit = client.app.state.services.settings.login_max_failures
    for name in ("target", "never-existed"):  # the same for a real and an unknown name
        for _ in range(limit):
            assert _sign_in(client, name, "guess-guess-1").status_code == 401
        locked = _sign_in(client, name, "guess-guess-1")
        assert locked.status_code == 429, locked.text
        assert int(locked.headers["Retry-After"]) > 0
        assert "too many failed sign-ins" in locked.json()["detail"]
    # even the right password waits until the lock ends
    assert _sign_in(client, "target", "target-password-1").status_code == 429
    throttle = client.app.state.services.login_throttle
    throttle.succeeded("target")  # the lock's end, without waiting 30 s
    assert _sign_in(client, "target", "target-password-1").status_code == 200


# ---- encryption at rest -------------------------------------------------------------------


def test_emails_are_stored_encrypted_and_shown_to_admins(client, auth, served):
    answer = client.post(
        "/users",
        json={
            "username": "buyer",
            "password": "buyer-password-1",
            "role": "client",
            "email": "buyer@shop.test",
        },
        headers=auth["admin"],
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["email"] == "buyer@shop.test"
    with session_scope(served.settings.db_url) as session:
        stored = session.scalar(select(User.email_encrypted).where(User.username == "buyer"))
    assert stored.startswith("v1:") and "buyer@shop.test" not in stored
    assert client.get("/users/buyer", headers=auth["admin"]).json()["email"] == "buyer@shop.test"
    bad = client.patch("/users/buyer", json={"email": "not-an-email"}, headers=auth["admin"])
    assert bad.status_code == 400 and "email" in bad.json()["detail"]


def test_production_mode_refuses_a_weak_jwt_secret(served):
    from prodclass.serving.security import InsecureConfigurationError

    weak = served.settings.model_copy(
        update={"environment": "production", "jwt_secret": None, "encryption_keys": None}
    )
    with (
        pytest.raises(InsecureConfigurationError, match="PRODCLASS_JWT_SECRET"),
        TestClient(create_app(weak)),
    ):
        pass


# ---- uploads ------------------------------------------------------------------------------


def test_zip_entry_names_cannot_reach_outside(client, auth, served, sample_products, tmp_path):
    """Names such as ``../../x`` or absolute paths are only ever used by their base name: the
    photo is still matched to its row, and nothing is written anywhere."""
    fields, photo = sample_products.both[0]
    name = f"image_{fields['imageid']}_product_{fields['product_id']}.jpg"
    row = {
        "designation": fields["designation"],
        "description": "",
        "productid": fields["product_id"],
        "imageid": fields["imageid"],
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"../../../{tmp_path.name}/{name}", photo)
        archive.writestr("/etc/X_evil.csv", pd.DataFrame({"r1": row}).T.to_csv())
    named = lambda: {p for p in tmp_path.parent.rglob("*") if p.name in (name, "X_evil.csv")}  # noqa: E731
    before = named()  # the sample photo's own copies
    answer = client.post(
        "/predict/batch/zip",
        files={"archive": ("evil.zip", buffer.getvalue(), "application/zip")},
        headers=auth["client"],
    )
    assert answer.status_code == 200, answer.text
    (line,) = [json.loads(text) for text in answer.text.splitlines()]
    assert line["row"] == "r1" and line["inputs"] == "text+image"
    assert named() == before  # (the prediction log keeps photos under their hash, not a name)
    assert not Path("/etc/X_evil.csv").exists()
