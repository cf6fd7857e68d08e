"""The prediction log on the real PostgreSQL: a record the database refuses never blocks the
others, and text that cannot be stored is refused on the way in.

PostgreSQL refuses what SQLite takes: a NUL character in a text column, a value longer than
its ``varchar``; no driver can send a lone surrogate (``"\\ud800"``, valid JSON). Such a record
is isolated (the failing batch split until it is found), written to the dead-letter file with
the reason and counted; every other record is stored. The API refuses such text with a 422
that says so, on every route that stores text; emoji and right-to-left text are stored as
sent. After each case normal predictions are logged, and the table holds exactly the ids the
API answered.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import select

from prodclass.db.session import session_scope
from prodclass.db.tables import PredictionRecord
from prodclass.photo_store import LocalPhotoStore
from prodclass.serving.api.app import create_app
from prodclass.serving.prediction_log import PredictionLog
from tests.servers import wait_for, with_database
from tests.serving.conftest import PASSWORDS, Served, database_with_accounts, login, wait_ready
from tests.serving.test_prediction_log import _record

pytestmark = pytest.mark.postgres

NUL = "Piscine\x00tubulaire"
SURROGATE = "Piscine caf\ud800"


@pytest.fixture(scope="module")
def db_url(postgres_url: str, database: str) -> str:
    url = with_database(postgres_url, database)
    database_with_accounts(url)
    return url


def stored(url: str) -> dict[str, PredictionRecord]:
    with session_scope(url) as session:
        return {r.id: r for r in session.scalars(select(PredictionRecord))}


def dead_letters() -> float:
    return REGISTRY.get_sample_value("prodclass_prediction_log_dead_letters_total") or 0.0


def test_a_refused_record_is_dead_lettered_and_the_others_are_written(db_url, tmp_path: Path):
    """Three records PostgreSQL refuses (NUL, lone surrogate, a product_id over varchar(64))
    among good ones, from the buffer and from the spill file: each is isolated and
    dead-lettered with its reason, every good one stored, and the log keeps going."""
    dead_file = tmp_path / "dead.jsonl"
    log = PredictionLog(
        db_url, LocalPhotoStore(tmp_path / "uploads"), tmp_path / "spill.jsonl", memory_limit=4,
        dead_letter_file=dead_file,
    )  # fmt: skip
    bad = [_record(), _record(), _record()]
    bad[0].designation = NUL
    bad[1].description = SURROGATE
    bad[2].product_id = "9" * 100
    good = [_record() for _ in range(7)]
    before = dead_letters()
    log.append([good[0], bad[0], *good[1:4], bad[1], good[4], bad[2], *good[5:]])
    assert (tmp_path / "spill.jsonl").is_file()  # six over the memory limit went to the spill
    assert log.flush() is True
    assert log.backlog == 0 and not log.failing
    assert set(stored(db_url)) >= {r.id for r in good}
    assert not set(stored(db_url)) & {r.id for r in bad}
    letters = [json.loads(line) for line in dead_file.read_text().splitlines()]
    assert {letter["record"]["id"] for letter in letters} == {r.id for r in bad}
    reasons = {letter["record"]["id"]: letter["reason"] for letter in letters}
    assert "NUL" in reasons[bad[0].id]
    assert "surrogate" in reasons[bad[1].id]
    assert "too long" in reasons[bad[2].id]
    # the dead letter keeps the text as it came (escaped: the file is plain ASCII JSON)
    assert {letter["record"]["designation"] for letter in letters} >= {NUL}
    assert dead_letters() - before == 3
    later = [_record() for _ in range(3)]
    log.append(later)
    assert log.flush() is True
    assert set(stored(db_url)) >= {r.id for r in later}


def test_a_database_that_does_not_answer_keeps_everything(tmp_path: Path):
    """Transient errors are no refusal: nothing is dead-lettered, the log says it is failing."""
    log = PredictionLog(
        "postgresql://postgres@127.0.0.1:1/nowhere?connect_timeout=1",
        LocalPhotoStore(tmp_path / "uploads"), tmp_path / "spill.jsonl",
        dead_letter_file=tmp_path / "dead.jsonl",
    )  # fmt: skip
    log.append([_record()])
    assert log.flush() is False
    assert log.failing and "writes failing" in log.problem()
    assert log.backlog == 1 and not (tmp_path / "dead.jsonl").exists()


@pytest.fixture(scope="module")
def client(served: Served, db_url: str, tmp_path_factory) -> Iterator[TestClient]:
    state = tmp_path_factory.mktemp("pglog")
    settings = served.settings.model_copy(
        update={
            "state_dir": state,
            "mlflow_tracking_uri": served.settings.tracking_uri,
            "database_url": db_url,
            "prediction_log_flush_seconds": 0.1,
            "model_poll_seconds": 0.0,
        }
    )
    with TestClient(create_app(settings)) as test_client:
        wait_ready(test_client)
        yield test_client


HUGE = "Piscine " + "x" * 100_000
# (field value, refused?) what a title may hold
CASES = {
    "nul": (NUL, "NUL"),
    "lone surrogate": (SURROGATE, "unicode string"),
    "100 kB title": (HUGE, "at most"),
    "emoji": ("Piscine gonflable 🏊‍♀️🌊 pour enfants", None),
    "right-to-left": ("حوض سباحة قابل للنفخ Piscine שחייה", None),
}


def zipped(rows: dict[str, dict[str, str]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("X_test.csv", pd.DataFrame.from_dict(rows, orient="index").to_csv())
    return buffer.getvalue()


def test_every_answered_prediction_is_logged_whatever_the_text(client, db_url):
    headers = login(client, "client")
    earlier = set(stored(db_url))  # the records of the test above
    answered: dict[str, str] = {}  # prediction id -> the designation sent
    for case, (text, refusal) in CASES.items():
        sends = [
            ("/predict", {"data": {"designation": text}}),
            ("/predict/batch", {"json": {"products": [{"designation": text}]}}),
        ]
        if "\ud800" in text:  # a form cannot carry a lone surrogate: JSON only, escaped
            escaped = json.dumps({"products": [{"designation": text}]})
            json_headers = {**headers, "Content-Type": "application/json"}
            sends = [("/predict/batch", {"content": escaped, "headers": json_headers})]
        for path, body in sends:
            answer = client.post(path, **({"headers": headers} | body))
            if refusal:
                assert answer.status_code == 422, (case, path, answer.text)
                assert refusal in answer.json()["detail"], (case, path, answer.text)
            else:
                assert answer.status_code == 200, (case, path, answer.text)
                out = answer.json()
                for prediction in out.get("predictions", [out]):
                    answered[prediction["prediction_id"]] = text
        normal = client.post("/predict", data={"designation": "Piscine tubulaire"}, headers=headers)
        assert normal.status_code == 200, (case, normal.text)
        answered[normal.json()["prediction_id"]] = "Piscine tubulaire"
        wait_for(
            lambda: set(stored(db_url)) >= set(answered),  # noqa: B023 (called at once)
            f"the predictions after the {case} case to be logged",
            30,
            detail=lambda: json.dumps(client.get("/ready").json()),
        )
    # a zip: a CSV holding a NUL is refused (pandas would cut the field there); rows over the
    # log's limits get an error line, the others are answered and logged
    row = {"designation": "Piscine", "description": "", "productid": "1", "imageid": "1"}
    rows = {"nul": row | {"designation": NUL}, "long id": row | {"productid": "9" * 100}}
    rows["emoji"] = row | {"designation": CASES["emoji"][0]}
    nul_zip = client.post("/predict/batch/zip", files={"archive": zipped(rows)}, headers=headers)
    assert nul_zip.status_code == 422 and "NUL" in nul_zip.json()["detail"], nul_zip.text
    del rows["nul"]
    answer = client.post("/predict/batch/zip", files={"archive": zipped(rows)}, headers=headers)
    lines = {line["row"]: line for line in map(json.loads, answer.text.splitlines())}
    assert "at most 64" in lines["long id"]["error"], lines
    answered[lines["emoji"]["prediction_id"]] = CASES["emoji"][0]
    wait_for(lambda: set(stored(db_url)) >= set(answered), "the zip's rows to be logged", 30)
    rows = {i: r for i, r in stored(db_url).items() if i not in earlier}
    assert set(rows) == set(answered)  # exactly the answered ids, nothing more
    assert {i: r.designation for i, r in rows.items()} == answered  # stored as sent
    ready = client.get("/ready").json()
    assert ready["ready"] and ready["prediction_log_backlog"] == 0, ready


@pytest.mark.parametrize(
    ("method", "path", "role", "body", "reason"),
    [
        (
            "POST",
            "/users",
            "admin",
            {"username": "nul", "password": "p\x00" * 8, "role": "client"},
            "NUL",
        ),
        (
            "POST",
            "/users",
            "admin",
            {"username": "em", "password": "p" * 12, "role": "client", "email": "a\ud800@b.fr"},
            "unicode string",
        ),
        ("PATCH", "/users/client", "admin", {"email": "a\x00@b.fr"}, "NUL"),
        ("POST", "/feedback/{id}", "reviewer", {"prdtypecode": 2583, "comment": "bad\x00"}, "NUL"),
        (
            "POST",
            "/feedback/{id}",
            "reviewer",
            {"prdtypecode": 2583, "comment": "\udfff"},
            "unicode string",
        ),
    ],
)
def test_unstorable_text_is_refused_on_every_route_that_stores_text(
    client, method, path, role, body, reason
):
    if "{id}" in path:
        made = client.post(
            "/predict", data={"designation": "Piscine"}, headers=login(client, "client")
        )
        path = path.format(id=made.json()["prediction_id"])
    headers = {**login(client, role), "Content-Type": "application/json"}
    answer = client.request(method, path, content=json.dumps(body), headers=headers)
    assert answer.status_code == 422, answer.text
    assert reason in answer.json()["detail"], answer.text


# what a client sends for text a URL cannot carry to the database: a NUL, a lone surrogate
# (U+D800 as UTF-8 bytes would be, which a decoder takes for U+FFFD) and a byte no UTF-8 holds
BAD_URL_TEXT = {"%00": "NUL", "%ED%A0%80": "surrogate", "%FF": "UTF-8"}
# a valid body for the routes that take one with a path parameter (the check must not be
# masked by a missing body)
BODIES = {
    ("POST", "/feedback/{prediction_id}"): {"prdtypecode": 2583},
    ("PATCH", "/users/{username}"): {},
}


def url_parameters(app) -> list[tuple[str, str, str, str]]:
    """(method, route path, "path" or "query", parameter name) for every path and query
    parameter of every operation the API documents."""
    found = []
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            method = method.upper()
            has_body = "requestBody" in operation
            for parameter in operation.get("parameters", []):
                if parameter["in"] in ("path", "query"):
                    if parameter["in"] == "path" and has_body:
                        assert (method, path) in BODIES, f"a valid body for {method} {path}"
                    found.append((method, path, parameter["in"], parameter["name"]))
    return found


def answer_to(client: TestClient, method: str, url: str, **kwargs) -> tuple[int, str]:
    """Status and detail; an exception the app lets out is the 500 a server would send."""
    try:
        answer = client.request(method, url, **kwargs)
    except Exception as exc:  # noqa: BLE001 (what the test reports)
        return 500, f"{type(exc).__name__}: {str(exc)[:200]}"
    try:
        return answer.status_code, str(answer.json().get("detail"))
    except ValueError:
        return answer.status_code, answer.text[:200]


def test_text_a_url_cannot_carry_is_refused_on_every_route(client):
    """A NUL, a lone surrogate or a byte that is no UTF-8 in any path or query parameter of
    any route, as each role: a 422 naming the parameter and the reason, never a 500 (the
    database refuses a NUL), nor a lookup of the replaced text (a decoder's U+FFFD)."""
    parameters = url_parameters(client.app)
    routes = {(method, path) for method, path, *_ in parameters}
    assert {("GET", "/users/{username}"), ("GET", "/products/similar")} <= routes
    wrong = []
    for role in PASSWORDS:
        headers = login(client, role)
        for method, path, where, name in parameters:
            for bad, reason in BAD_URL_TEXT.items():
                url = path
                for other in re.findall(r"{(\w+)}", path):
                    url = url.replace(f"{{{other}}}", f"x{bad}y" if other == name else "x")
                if where == "query":
                    url += f"?{name}=x{bad}y"
                body = BODIES.get((method, path))
                sent = {"headers": headers} | ({} if body is None else {"json": body})
                code, detail = answer_to(client, method, url, **sent)
                if not (code == 422 and reason in detail and name in detail):
                    wrong.append(f"{role} {method} {url}: {code} {detail}")
    assert not wrong, f"{len(wrong)} wrong answers:\n" + "\n".join(wrong)


@pytest.mark.parametrize("field", ["username", "password"])
@pytest.mark.parametrize("bad", ["x\x00y", "x\ud800y"])
def test_a_sign_in_with_text_the_database_cannot_take_is_refused(client, field, bad):
    """The sign-in form looks the user name up: a NUL there is a 422 that names the field, not
    a 500. A lone surrogate arrives as U+FFFD (the form decoder replaces what is no UTF-8):
    no such account, a 401."""
    form = {"username": "client", "password": PASSWORDS["client"]} | {field: bad}
    encoded = urlencode(form, encoding="utf-8", errors="surrogatepass")
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    code, detail = answer_to(client, "POST", "/token", content=encoded, headers=headers)
    if "\x00" in bad:
        assert code == 422 and "NUL" in detail and field in detail, (code, detail)
    else:
        assert code == 401, (code, detail)
