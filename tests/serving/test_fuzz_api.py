"""Fuzzing the prediction API from its own OpenAPI document (schemathesis, in process).

Every operation of the document gets generated requests, valid and invalid (wrong types,
missing fields, out-of-range numbers, odd strings and files), sent as a signed-in admin to a
real app serving a real model trained on sample products (``tests/serving/conftest.py``).
An answer must never be a 5xx: bad input is a 4xx with a reason. Answers with a documented
status must match the documented schema and content type.

The app is this module's own: its own application database (users of each role, the
predictions and feedback the fuzzer creates) and state folder, so what the fuzzer creates,
changes or deletes (users, feedback) reaches no other test module. The model registry is the
shared one, read only: the operations that would change it or the serving model are excluded.

Excluded operations, and why:

- ``POST /training/runs``: asks Dagster for a run of the retraining pipeline, minutes of CPU
  training on this 2-CPU machine.
- ``POST /models/{version}/load`` and its alias ``POST /models/load/{version}``: start a
  background load and swap of the serving model (a generated "3" loads the deliberately
  corrupt version); what follows depends on timing, not on the request.
- ``POST /models/{version}/promote``, ``POST /models/rollback`` and
  ``POST /models/ab/promote``: move the ``champion`` alias in the MLflow registry that the
  other test modules share, and start a load.
  (Their input handling, a non-numeric or unknown version, is tested in tests/serving.)

Budget: 37 operations fuzzed, ``EXAMPLES`` (17) generated requests per operation plus
schemathesis' explicit examples and boundary cases, each sent as the admin and replayed with a
``reviewer`` and a ``client`` token (refused or answered, never a 5xx; what the admin and the
reviewer are answered must match the document); a 4xx must be JSON with a ``detail``. The
three roles share a budget of about 50 requests per operation (17 x 3; about 13 s of requests
on 2 CPU cores, the served model's setup aside). The hand-written tests below cover what the
generator cannot build: damaged zips, lone surrogates in JSON, JSON the generator never writes
(``NaN``, ``Infinity``, ``1e400``, integers of thousands of digits, NUL and lone-surrogate
escapes, nesting 50,000 deep) in every field of every JSON route as each role, and any
Unicode text on the success path of /predict.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from prodclass.data.layout import ChallengeLayout, read_features
from prodclass.data.taxonomy import is_known
from prodclass.data.text import product_text
from prodclass.serving.api.app import create_app
from prodclass.settings import Settings
from tests.reliability.test_fuzz_parsers import damaged_zips
from tests.serving.conftest import Served, database_with_accounts, login, wait_ready

EXAMPLES = 17  # x 3 roles: about the requests of 25 x 2
ROLES = ("admin", "reviewer", "client")
EXCLUDED = {
    ("POST", "/training/runs"),
    ("POST", "/models/{version}/load"),
    ("POST", "/models/load/{version}"),
    ("POST", "/models/{version}/promote"),
    ("POST", "/models/rollback"),
    ("POST", "/models/ab/promote"),
}

# The document the app serves; it does not depend on settings (checked against the running
# app's below). Loaded at import so that each operation is its own test.
DOCUMENT = create_app(Settings.model_construct()).openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT).exclude(
    func=lambda ctx: (ctx.operation.method.upper(), ctx.operation.path) in EXCLUDED
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def fuzz_settings(served: Served, tmp_path_factory) -> Settings:
    """The served registry and model, with this module's own database and state folder."""
    state = tmp_path_factory.mktemp("fuzz") / "state"
    state.mkdir()
    settings = served.settings.model_copy(
        update={
            "state_dir": state,
            "mlflow_tracking_uri": served.settings.tracking_uri,
            "database_url": f"sqlite:///{state / 'fuzz.db'}",
            "model_poll_seconds": 0.0,  # the champion does not move here
            "monitoring_refresh_seconds": 0.0,
            "api_rate_limit_per_minute": 1_000_000,  # one fuzzing user, many requests
            "api_rate_limit_burst": 100_000,
            "dagster_home": state / "dagster",  # never asked: the route is excluded
        }
    )
    database_with_accounts(settings.db_url)
    return settings


@pytest.fixture(scope="module")
def client(fuzz_settings: Settings) -> Iterator[TestClient]:
    """The TestClient runs the app's lifespan (services, model load) for the module."""
    with TestClient(create_app(fuzz_settings)) as test_client:
        wait_ready(test_client)
        yield test_client


@pytest.fixture(scope="module")
def tokens(client: TestClient) -> Callable[..., str]:
    """The bearer token of a role's account (signed in once), or a fresh one from the app's
    own token issuer for a call that revokes the token it is given."""
    signed_in = {
        role: login(client, role)["Authorization"].removeprefix("Bearer ") for role in ROLES
    }

    def token(role: str, fresh: bool = False) -> str:
        if fresh:
            return client.app.state.services.tokens.issue(role, role)
        return signed_in[role]

    return token


@pytest.fixture(scope="module")
def app(client: TestClient):
    """The running app for schemathesis' in-process transport; the lifespan stays the
    TestClient's (schemathesis would otherwise start a second set of services)."""
    running = client.app

    async def without_lifespan(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            return
        await running(scope, receive, send)

    return without_lifespan


def test_the_fuzzed_document_is_the_one_the_app_serves(client):
    assert client.get("/openapi.json").json() == DOCUMENT
    fuzzed = {(op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations()}
    assert EXCLUDED.isdisjoint(fuzzed)
    assert len(fuzzed) + len(EXCLUDED) == sum(
        1 for methods in DOCUMENT["paths"].values() for m in methods if m != "parameters"
    )


ADMIN_CHECKS = [not_a_server_error, content_type_conformance, response_schema_conformance]


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_operation_never_answers_5xx(case, app, tokens):
    for role in ROLES:
        token = tokens(role, fresh=case.operation.path == "/token/revoke")  # revoke signs out
        headers = {"Authorization": f"Bearer {token}"}
        response = case.call(app=app, headers=headers)
        # the others' answer may be a 403 for the admin's operations, never a server error
        case.validate_response(
            response, checks=ADMIN_CHECKS if role != "client" else [not_a_server_error]
        )
        if 400 <= response.status_code < 500:  # a refusal says why
            assert response.headers.get("content-type", [""])[0].startswith("application/json")
            assert response.json().get("detail"), response.text
        if case.operation.path != "/token" and "Authorization" in response.request.headers:
            # a 401 despite a valid token would mean the fuzzing ran signed out
            assert response.status_code != 401, response.text


def test_a_damaged_zip_is_refused_with_a_reason(client, tokens, sample):
    """Regression (found by tests/reliability/test_fuzz_parsers.py): a zip whose CSV or photo
    member cannot be read (bad CRC or header, corrupt deflate data, encryption, an unknown
    compression method) was a 500 from /predict/batch/zip."""
    x = read_features(ChallengeLayout(sample).x_train).head(20)
    photo = next(ChallengeLayout(sample).image_dir().glob("*.jpg")).read_bytes()
    headers = {"Authorization": f"Bearer {tokens('client')}"}
    for why, data in damaged_zips(x.to_csv().encode(), photo).items():
        answer = client.post(
            "/predict/batch/zip",
            files={"archive": ("batch.zip", data, "application/zip")},
            headers=headers,
        )
        assert answer.status_code == 422, (why, answer.text)
        assert "cannot be read from the zip" in answer.json()["detail"], why


SURROGATE = "caf\ud800"  # valid JSON ("\ud800"), but no UTF-8 encoding exists


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/predict/batch", {"products": [{"designation": SURROGATE}]}),
        ("/predict/batch", {"products": [{"designation": "x", "product_id": SURROGATE}]}),
        ("/predict/similarity", {"a": {"designation": "x"}, "b": {"description": SURROGATE}}),
        ("/users", {"username": SURROGATE, "password": "p" * 12, "role": "client"}),
    ],
)
def test_lone_surrogates_in_json_are_refused_with_a_reason(client, tokens, path, body):
    """Regression (a 500: UnicodeEncodeError hashing the text of the prediction log) for the
    batch route; schemathesis only generates encodable text, so these are sent by hand."""
    headers = {"Authorization": f"Bearer {tokens('admin')}", "Content-Type": "application/json"}
    answer = client.post(path, content=json.dumps(body), headers=headers)  # "\ud800" escaped
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.json()["detail"], answer.text


@settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    designation=st.text(max_size=300),
    description=st.one_of(st.just(""), st.text(max_size=2000)),
)
def test_any_text_is_classified_or_refused(client, tokens, designation, description):
    """The success path the schema fuzzing rarely reaches: any Unicode title and description
    (control characters, astral planes, markup) through the queue, the real model and the
    prediction log; classified when cleaning leaves text, else a 422 with the reason."""
    headers = {"Authorization": f"Bearer {tokens('client')}"}
    data = {"designation": designation, "description": description}
    answer = client.post("/predict", data=data, headers=headers)
    if "\x00" in designation + description:  # refused: PostgreSQL cannot store it
        assert answer.status_code == 422 and "NUL" in answer.json()["detail"], answer.text
    elif product_text(designation, description):
        assert answer.status_code == 200, answer.text
        assert is_known(answer.json()["prdtypecode"])
    else:
        assert answer.status_code == 422 and answer.json()["detail"], answer.text


# JSON that schemathesis never writes, as raw text: what Python's parser (FastAPI's) accepts
# but cannot be written back as JSON (NaN, Infinity; 1e400 parses as Infinity), integers over
# its 4,300-digit limit, text no database stores, nesting past the recursion limit
HOSTILE_JSON = {
    "NaN": "NaN",
    "Infinity": "Infinity",
    "-Infinity": "-Infinity",
    "1e400": "1e400",
    "huge integer": "9" * 5_000,
    "integer over 64 bits": str(2**70),
    "NUL": '"Piscine\\u0000"',
    "lone surrogate": '"Piscine\\ud800"',
    "deep array": "[" * 50_000 + "]" * 50_000,
    "deep object": '{"a":' * 50_000 + "1" + "}" * 50_000,
}


def _resolve(node: dict) -> dict:
    while "$ref" in node:
        node = DOCUMENT["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def placements(node: dict, depth: int = 2) -> list[str]:
    """JSON templates putting ``@`` in the body's place and in each of its fields, two levels
    deep (``{"products": [{"designation": @}]}``)."""
    node = _resolve(node)
    templates = ["@"]
    if depth == 0:
        return templates
    for name, field in node.get("properties", {}).items():
        for inner in placements(field, depth - 1):
            templates.append(f'{{"{name}": {inner}}}')
        for option in [_resolve(field)] + [_resolve(o) for o in field.get("anyOf", [])]:
            if option.get("type") == "array" and "items" in option:
                for inner in placements(option["items"], depth - 1)[1:]:
                    templates.append(f'{{"{name}": [{inner}]}}')
    return sorted(set(templates))


JSON_OPERATIONS = sorted(
    (method.upper(), path, operation["requestBody"]["content"]["application/json"]["schema"])
    for path, methods in DOCUMENT["paths"].items()
    for method, operation in methods.items()
    if "application/json" in operation.get("requestBody", {}).get("content", {})
    and (method.upper(), path) not in EXCLUDED
)


def test_every_json_route_is_fuzzed_with_hostile_json():
    assert {(m, p) for m, p, _ in JSON_OPERATIONS} >= {
        ("POST", "/predict/batch"),
        ("POST", "/predict/similarity"),
        ("POST", "/users"),
        ("PATCH", "/users/{username}"),
        ("POST", "/feedback/{prediction_id}"),
    }


@pytest.mark.parametrize("value", list(HOSTILE_JSON), ids=list(HOSTILE_JSON))
@pytest.mark.parametrize(
    ("method", "path", "body_schema"),
    JSON_OPERATIONS,
    ids=[f"{m} {p}" for m, p, _ in JSON_OPERATIONS],
)
def test_hostile_json_is_refused_with_a_reason(client, tokens, method, path, body_schema, value):
    """Regression: NaN or Infinity anywhere in a JSON body was a 500 on every JSON route
    (FastAPI's 422 echoes the input, which cannot be rendered as JSON)."""
    url = path.replace("{username}", "client").replace("{prediction_id}", "none")
    for role in ROLES:
        headers = {"Authorization": f"Bearer {tokens(role)}", "Content-Type": "application/json"}
        for template in placements(body_schema):
            body = template.replace("@", HOSTILE_JSON[value])
            answer = client.request(method, url, content=body, headers=headers)
            where = (role, template, answer.status_code, answer.text[:300])
            assert 400 <= answer.status_code < 500, where
            assert answer.headers["content-type"].startswith("application/json"), where
            assert isinstance(answer.json()["detail"], str) and answer.json()["detail"], where
