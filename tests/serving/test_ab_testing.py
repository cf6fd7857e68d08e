"""Live A/B tests against the real app: the champion (late-fusion) and a challenger
(tfidf-linear), both trained on real sample products and registered under a model name of
this module's own, with an application database of its own (the other modules' champion and
log stay as they are). A sticky split, stopping, shadow mode, the role checks, the per-arm
report (`prodclass monitor ab`, GET /models/ab) on real reviewer verdicts, promotion from the
live numbers, and /predict's model_version."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from prometheus_client import REGISTRY
from sqlalchemy import select
from typer.testing import CliRunner

from prodclass.cli.main import app as cli
from prodclass.data.layout import ChallengeLayout, read_features, read_labels
from prodclass.db.session import session_scope
from prodclass.db.tables import PredictionRecord
from prodclass.registry.model_registry import (
    champion_version,
    promote,
    register,
    set_challenger,
)
from prodclass.registry.tracking import configure_mlflow
from prodclass.serving.ab_testing import (
    AbRouter,
    product_key,
    running_test,
    set_test,
    split_arm,
    stop_test,
)
from prodclass.serving.api.app import create_app
from prodclass.serving.json_products import ReceivedProduct
from prodclass.serving.prediction_log import PredictionLog
from prodclass.serving.predictor import Predictor
from prodclass.serving.shadow import ShadowRunner
from prodclass.settings import Settings, get_settings
from prodclass.training.metrics import classification_metrics
from tests.conftest import PER_CODE, SIX_CODES
from tests.servers import wait_for
from tests.serving.conftest import (
    PASSWORDS,
    Served,
    database_with_accounts,
    login,
    wait_ready,
    wait_serving,
)

MODEL_NAME = "prodclass-ab"


@dataclass
class AbServed:
    settings: Settings
    champion: str  # late-fusion
    challenger: str  # tfidf-linear
    broken: str  # a version whose weights are corrupt


@pytest.fixture(scope="module")
def ab_served(served: Served, tmp_path_factory) -> AbServed:
    """The served versions registered again under MODEL_NAME (champion and challenger
    aliases there), served from a state folder and database of their own."""
    configure_mlflow(served.settings)  # register() below works on MLflow's default store
    mlflow = MlflowClient(served.settings.tracking_uri, served.settings.tracking_uri)
    versions = {}
    for role, version in (
        ("challenger", served.text_version),
        ("champion", served.multimodal_version),
        ("broken", served.broken_version),
    ):
        source = mlflow.get_model_version(served.settings.registered_model_name, version).source
        versions[role] = register(source, MODEL_NAME, {}, {})
    promote(MODEL_NAME, versions["champion"])
    set_challenger(MODEL_NAME, versions["challenger"])
    root = tmp_path_factory.mktemp("ab")
    settings = served.settings.model_copy(
        update={
            "state_dir": root / "state",
            "mlflow_tracking_uri": served.settings.tracking_uri,
            "registered_model_name": MODEL_NAME,
            "model_uri": f"models:/{MODEL_NAME}@champion",
            "model_poll_seconds": 0.0,
            "monitoring_refresh_seconds": 0.0,
            "ab_cache_seconds": 0.0,  # one replica here: every change applies at once
        }
    )
    database_with_accounts(settings.db_url)
    return AbServed(settings, versions["champion"], versions["challenger"], versions["broken"])


@pytest.fixture(scope="module")
def ab_client(ab_served: AbServed) -> Iterator[TestClient]:
    with TestClient(create_app(ab_served.settings)) as client:
        wait_ready(client)
        yield client


@pytest.fixture(scope="module")
def heads(ab_client: TestClient) -> dict[str, dict[str, str]]:
    return {role: login(ab_client, role) for role in PASSWORDS}


@pytest.fixture(autouse=True)
def no_test_left(ab_served: AbServed) -> Iterator[None]:
    """Each test starts and ends with no A/B test running."""
    stop_test(ab_served.settings.db_url, "tests")
    yield
    stop_test(ab_served.settings.db_url, "tests")


@pytest.fixture(scope="module")
def labelled(sample: Path) -> list[tuple[dict, int]]:
    """Real products of the six codes the models know that neither trained on (text fields,
    true code): 10 of each."""
    layout = ChallengeLayout(sample)
    rows = read_features(layout.x_train).join(read_labels(layout.y_train))
    out = []
    for code in SIX_CODES:
        titled = (rows["prdtypecode"] == code) & (rows["designation"].str.strip() != "")
        ids = rows.index[titled][PER_CODE : PER_CODE + 10]
        for row_id in ids:
            row = rows.loc[row_id]
            fields = {
                "designation": row["designation"],
                "description": row["description"][:2000],
                "product_id": str(row["productid"]),
                "product_identifier": str(row_id),
            }
            out.append((fields, int(code)))
    return out


def _start(client: TestClient, heads: dict, **body) -> dict:
    answer = client.put("/models/ab", json=body, headers=heads["admin"])
    assert answer.status_code == 200, answer.text
    return answer.json()


def _batch(client: TestClient, headers: dict, products: list[dict], **extra) -> list[dict]:
    answer = client.post("/predict/batch", json={"products": products, **extra}, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["predictions"]


def _logged(settings: Settings, ids: list[str]) -> dict[str, PredictionRecord]:
    with session_scope(settings.db_url) as session:
        query = select(PredictionRecord).where(PredictionRecord.id.in_(ids))
        return {r.id: r for r in session.scalars(query)}


# ---- the sticky split --------------------------------------------------------------------------


def test_a_30_percent_split_sends_30_percent_of_products_and_each_one_sticks(
    ab_client, heads, ab_served, labelled
):
    status = _start(ab_client, heads, challenger="challenger", challenger_percent=30)
    assert status["test"]["challenger_version"] == ab_served.challenger
    assert status["test"]["champion_version"] == ab_served.champion
    assert status["test"]["challenger_percent"] == 30 and status["challenger_loaded"]
    texts = [fields["designation"] for fields, _ in labelled]
    products = [{"designation": texts[i % len(texts)], "product_id": f"ab-{i}"} for i in range(400)]
    answers = _batch(ab_client, heads["client"], products[:200]) + _batch(
        ab_client, heads["client"], products[200:]
    )
    arms = [a["arm"] for a in answers]
    assert set(arms) == {"champion", "challenger"}
    for answer in answers:  # the arm says which model answered
        expected = ab_served.challenger if answer["arm"] == "challenger" else ab_served.champion
        assert answer["model"]["version"] == expected
    share = arms.count("challenger") / len(arms)
    tolerance = 3 * math.sqrt(0.3 * 0.7 / len(arms))  # three binomial standard deviations
    assert abs(share - 0.3) < tolerance, share
    # sticky: the same product gets the same arm again, whatever else the request says
    first = {p["product_id"]: a["arm"] for p, a in zip(products, answers)}
    for i in range(0, 400, 20):
        for text in ("autre titre", texts[(i + 7) % len(texts)]):
            again = ab_client.post(
                "/predict",
                data={"designation": text, "product_id": f"ab-{i}"},
                headers=heads["reviewer"],
            )
            assert again.json()["arm"] == first[f"ab-{i}"]
    # a product without an id: its content decides, the same every time
    anonymous = [
        ab_client.post("/predict", data={"designation": texts[3]}, headers=heads["client"])
        for _ in range(3)
    ]
    assert len({a.json()["arm"] for a in anonymous}) == 1
    # the log records each answer's arm and the version that gave it
    ab_client.app.state.services.prediction_log.flush()
    logged = _logged(ab_served.settings, [a["prediction_id"] for a in answers])
    assert len(logged) == 400
    for answer in answers:
        record = logged[answer["prediction_id"]]
        assert (record.arm, record.model_version) == (answer["arm"], answer["model"]["version"])


def test_raising_the_share_only_moves_products_to_the_challenger():
    keys = [product_key(ReceivedProduct.of("x", product_id=f"p{i}")) for i in range(2000)]
    at_10 = {k for k in keys if split_arm(k, 0.10) == "challenger"}
    at_30 = {k for k in keys if split_arm(k, 0.30) == "challenger"}
    assert at_10 < at_30 and 0.07 < len(at_10) / 2000 < 0.13


def test_stopping_the_test_returns_every_product_to_the_champion(ab_client, heads, ab_served):
    _start(ab_client, heads, challenger=ab_served.challenger, challenger_percent=50)
    products = [
        {"designation": "Figurine de collection", "product_id": f"s-{i}"} for i in range(60)
    ]
    during = _batch(ab_client, heads["client"], products)
    assert "challenger" in {a["arm"] for a in during}
    stopped = ab_client.delete("/models/ab", headers=heads["admin"])
    assert stopped.status_code == 200 and stopped.json()["test"] is None
    after = _batch(ab_client, heads["client"], products)
    assert {a["arm"] for a in after} == {"champion"}
    assert {a["model"]["version"] for a in after} == {ab_served.champion}
    again = ab_client.delete("/models/ab", headers=heads["admin"])
    assert again.status_code == 404 and "no A/B test" in again.json()["detail"]
    journal = ab_client.get(
        "/monitoring/journal", params={"kind": "ab"}, headers=heads["reviewer"]
    ).json()
    assert "stopped by admin" in journal[0]["summary"]
    assert "started by admin" in journal[1]["summary"]
    assert journal[0]["details"]["by"] == "admin"


# ---- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ({"challenger_percent": 60}, 422, "between 0 and 50"),
        ({"challenger_percent": -1}, 422, "between 0 and 50"),
        ({}, 422, "challenger_percent (0 to 50) is needed"),
        ({"challenger": "999", "challenger_percent": 10}, 404, "no version 999"),
        ({"challenger": "nope", "challenger_percent": 10}, 404, "no version or alias 'nope'"),
        ({"challenger": "bad version", "challenger_percent": 10}, 422, "challenger"),
        ({"challenger_percent": 10, "share": 3}, 422, "share"),
    ],
    ids=["over-50", "negative", "split-without-share", "unknown", "no-alias", "bad-ref", "extra"],
)
def test_bad_settings_are_refused_with_a_reason(ab_client, heads, body, status, reason):
    answer = ab_client.put("/models/ab", json=body, headers=heads["admin"])
    assert answer.status_code == status, answer.text
    assert reason in answer.json()["detail"]
    assert ab_client.get("/models/ab", headers=heads["admin"]).json()["test"] is None


def test_the_champion_and_a_version_that_cannot_load_are_refused(ab_client, heads, ab_served):
    champion = ab_client.put(
        "/models/ab",
        json={"challenger": ab_served.champion, "challenger_percent": 10},
        headers=heads["admin"],
    )
    assert champion.status_code == 422 and "is the champion" in champion.json()["detail"]
    broken = ab_client.put(
        "/models/ab",
        json={"challenger": ab_served.broken, "challenger_percent": 10},
        headers=heads["admin"],
    )
    assert broken.status_code == 422, broken.text
    assert f"version {ab_served.broken} cannot be served" in broken.json()["detail"]
    assert running_test(ab_served.settings.db_url) is None


def test_only_admins_change_the_test_and_reviewers_see_it(ab_client, heads):
    body = {"challenger_percent": 10}
    for role in ("client", "reviewer"):
        for method in ("PUT", "POST", "DELETE"):
            answer = ab_client.request(method, "/models/ab", json=body, headers=heads[role])
            assert answer.status_code == 403 and "may not" in answer.json()["detail"]
        promote_ = ab_client.post("/models/ab/promote", headers=heads[role])
        assert promote_.status_code == 403
    assert ab_client.get("/models/ab", headers=heads["client"]).status_code == 403
    assert ab_client.get("/models/ab", headers=heads["reviewer"]).status_code == 200
    nothing = ab_client.post("/models/ab/promote", headers=heads["admin"])
    assert nothing.status_code == 409 and "no A/B test is running" in nothing.json()["detail"]


# ---- replicas share the test through the database ------------------------------------------


def test_a_replica_follows_a_change_made_elsewhere_within_its_cache_time(ab_client, ab_served):
    """Another replica's router over the same database: it applies the test another replica
    set once its cached copy is older than its cache time."""
    services = ab_client.app.state.services
    replica = AbRouter(ab_served.settings.db_url, 1.0, services.ab.versions, services.ab.shadow)
    replica.start()
    try:
        assert replica.test() is None
        set_test(ab_served.settings.db_url, ab_served.challenger, "split", 0.2, None, "elsewhere")
        assert replica.test() is None  # what it read last
        seen = wait_for(replica.test, "the replica to read the new test", timeout=3)
        assert seen.challenger_share == 0.2 and seen.started_by == "elsewhere"
        stop_test(ab_served.settings.db_url, "elsewhere")
        wait_for(lambda: replica.test() is None, "the replica to read the stop", timeout=3)
    finally:
        replica.stop()


# ---- shadow mode ----------------------------------------------------------------------------


def test_shadow_mode_answers_with_the_champion_and_logs_the_challenger(
    ab_client, heads, ab_served, labelled
):
    status = _start(ab_client, heads, challenger="challenger", mode="shadow")
    assert status["test"]["mode"] == "shadow"
    products = [fields for fields, _ in labelled[:12]]
    answers = _batch(ab_client, heads["client"], products)
    assert {a["arm"] for a in answers} == {"champion"}
    assert {a["model"]["version"] for a in answers} == {ab_served.champion}
    services = ab_client.app.state.services
    assert services.ab.shadow.drain(60)
    services.prediction_log.flush()
    with session_scope(ab_served.settings.db_url) as session:
        shadows = list(
            session.scalars(
                select(PredictionRecord).where(
                    PredictionRecord.shadow_of.in_([a["prediction_id"] for a in answers])
                )
            )
        )
    assert len(shadows) == len(answers)
    assert {s.arm for s in shadows} == {"shadow"}
    assert {s.model_version for s in shadows} == {ab_served.challenger}
    # what was logged is the challenger's own answer to the same product
    challenger = Predictor.load(f"models:/{MODEL_NAME}/{ab_served.challenger}")
    direct = challenger.predict([ReceivedProduct.of(**p).input for p in products])
    by_answer = {s.shadow_of: s.prdtypecode for s in shadows}
    assert [by_answer[a["prediction_id"]] for a in answers] == [d.prdtypecode for d in direct]
    # never shown to reviewers, never reviewed
    queue = ab_client.get("/predictions", params={"limit": 1000}, headers=heads["reviewer"]).json()
    assert not {q["id"] for q in queue} & {s.id for s in shadows}
    refused = ab_client.post(
        f"/feedback/{shadows[0].id}", json={"prdtypecode": 10}, headers=heads["reviewer"]
    )
    assert refused.status_code == 422 and "shadow answer" in refused.json()["detail"]


def test_a_full_shadow_queue_drops_and_counts_instead_of_waiting(ab_client, tmp_path):
    services = ab_client.app.state.services
    challenger = services.slot.current  # any real model does: the queue is what is tested
    log = PredictionLog(services.db_url, services.photos, tmp_path / "spill.jsonl")
    runner = ShadowRunner(log, limit=2)
    dropped_before = REGISTRY.get_sample_value("prodclass_ab_shadow_dropped_total") or 0.0
    products = [ReceivedProduct.of(f"Jeu de société numéro {i}") for i in range(40)]
    start = time.perf_counter()
    accepted = [
        runner.offer(challenger, [p], [f"answer-{i}"], "client", 5) for i, p in enumerate(products)
    ]
    offered_in = time.perf_counter() - start
    try:
        assert runner.drain(60)
    finally:
        runner.stop()
    dropped = accepted.count(False)
    assert 0 < dropped < len(products)
    after = REGISTRY.get_sample_value("prodclass_ab_shadow_dropped_total")
    assert after - dropped_before == dropped
    assert offered_in < 0.5  # 40 offers never waited for a prediction


# ---- per-arm numbers on real reviews -----------------------------------------------------------


def _review(client: TestClient, heads: dict, answers: list[dict], truth: list[int]) -> None:
    for answer, code in zip(answers, truth):
        given = client.post(
            f"/feedback/{answer['prediction_id']}",
            json={"prdtypecode": code},
            headers=heads["reviewer"],
        )
        assert given.status_code == 201, given.text


def _monitor_ab(settings: Settings, monkeypatch, *args: str) -> str:
    monkeypatch.setenv("PRODCLASS_STATE_DIR", str(settings.state_dir))
    monkeypatch.setenv("PRODCLASS_MLFLOW_TRACKING_URI", settings.tracking_uri)
    monkeypatch.delenv("PRODCLASS_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["monitor", "ab", *args])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    return result.output


def test_per_arm_report_on_reviewed_predictions(ab_client, heads, ab_served, labelled, monkeypatch):
    status = _start(ab_client, heads, challenger="challenger", challenger_percent=50)
    products = [fields for fields, _ in labelled]
    truth = [code for _, code in labelled]
    answers = _batch(ab_client, heads["client"], products)
    _review(ab_client, heads, answers, truth)
    expected = {}
    for arm in ("champion", "challenger"):
        mine = [(t, a["prdtypecode"]) for a, t in zip(answers, truth) if a["arm"] == arm]
        y, p = (np.array(v) for v in zip(*mine))
        expected[arm] = (len(mine), classification_metrics(y, p)["weighted_f1"])
    assert min(n for n, _ in expected.values()) >= 10  # both arms have reviews to compare
    report = ab_client.get("/models/ab", headers=heads["reviewer"]).json()
    assert report["test"]["started_at"] == status["test"]["started_at"]
    arms = {a["arm"]: a for a in report["arms"]}
    assert set(arms) == {"champion", "challenger"}
    for arm, (n, f1) in expected.items():
        assert arms[arm]["predictions"] == n and arms[arm]["reviewed"] == n
        assert arms[arm]["weighted_f1"] == pytest.approx(f1)
        assert 0 < arms[arm]["mean_confidence"] <= 1
        assert 0 < arms[arm]["latency_ms_p50"] <= arms[arm]["latency_ms_p95"]
    (split,) = report["differences"]
    gap = expected["challenger"][1] - expected["champion"][1]
    assert split["mode"] == "split" and not split["paired"]
    assert split["difference"] == pytest.approx(gap, abs=1e-4)
    assert split["low"] <= split["difference"] <= split["high"]
    output = _monitor_ab(ab_served.settings, monkeypatch)
    assert f"challenger version {ab_served.challenger} (50% of products)" in output
    for arm, (n, f1) in expected.items():
        line = next(line for line in output.splitlines() if line.startswith(arm))
        assert f"{n:>9}" in line and f"{f1:.4f}" in line
    assert f"challenger minus champion, weighted F1 (split, unpaired bootstrap): {gap:+.4f}" in (
        output
    )
    assert f"[{split['low']:+.4f}, {split['high']:+.4f}]" in output


def test_shadow_report_pairs_the_challenger_with_the_reviewed_answers(
    ab_client, heads, ab_served, labelled, monkeypatch
):
    _start(ab_client, heads, challenger="challenger", mode="shadow")
    products = [fields for fields, _ in labelled[::2]]
    truth = [code for _, code in labelled[::2]]
    answers = _batch(ab_client, heads["client"], products)
    assert ab_client.app.state.services.ab.shadow.drain(60)
    _review(ab_client, heads, answers, truth)
    report = ab_client.get("/models/ab", headers=heads["reviewer"]).json()
    arms = {a["arm"]: a for a in report["arms"]}
    assert arms["shadow"]["predictions"] == arms["champion"]["predictions"] == len(products)
    assert arms["shadow"]["reviewed"] == len(products)  # verdicts on the answers given
    (paired,) = report["differences"]
    assert paired["paired"] and paired["reviewed_challenger"] == len(products)
    assert paired["difference"] == pytest.approx(
        arms["shadow"]["weighted_f1"] - arms["champion"]["weighted_f1"], abs=1e-4
    )
    output = _monitor_ab(ab_served.settings, monkeypatch)
    assert "(shadow)" in output and "shadow minus champion" in output
    assert "paired bootstrap" in output


def test_metrics_are_labelled_by_arm(ab_client, heads, ab_served):
    _start(ab_client, heads, challenger="challenger", challenger_percent=50)
    products = [{"designation": "Poupée", "product_id": f"m-{i}"} for i in range(20)]
    _batch(ab_client, heads["client"], products)
    text = ab_client.get("/metrics").text
    for arm in ("champion", "challenger"):
        assert f'prodclass_ab_prediction_duration_seconds_count{{arm="{arm}"}}' in text
        assert f'prodclass_ab_confidence_bucket{{arm="{arm}",le="1.0"}}' in text
    assert (
        f'prodclass_ab_predictions_total{{arm="challenger",version="{ab_served.challenger}"}}'
        in text
    )


# ---- model_version on /predict ------------------------------------------------------------


def test_model_version_is_for_admins_and_reviewers(ab_client, heads, ab_served):
    fields = {"designation": "Coque de téléphone", "model_version": ab_served.challenger}
    for role in ("admin", "reviewer"):
        answer = ab_client.post("/predict", data=fields, headers=heads[role])
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"]["version"] == ab_served.challenger
        assert answer.json()["model"]["family"] == "tfidf-linear"
        assert answer.json()["arm"] == "requested"
    refused = ab_client.post("/predict", data=fields, headers=heads["client"])
    assert refused.status_code == 403
    assert "may not choose the model version" in refused.json()["detail"]
    by_alias = ab_client.post(
        "/predict", data=fields | {"model_version": "champion"}, headers=heads["admin"]
    )
    assert by_alias.json()["model"]["version"] == ab_served.champion
    assert by_alias.json()["arm"] == "champion"
    plain = ab_client.post("/predict", data={"designation": "x"}, headers=heads["client"])
    assert plain.json()["model"]["version"] == ab_served.champion
    batch = _batch(
        ab_client,
        heads["reviewer"],
        [{"designation": "Livre"}, {"designation": "Jouet"}],
        model_version=ab_served.challenger,
    )
    assert {b["model"]["version"] for b in batch} == {ab_served.challenger}
    client_batch = ab_client.post(
        "/predict/batch",
        json={"products": [{"designation": "Livre"}], "model_version": ab_served.challenger},
        headers=heads["client"],
    )
    assert client_batch.status_code == 403


@pytest.mark.parametrize(
    ("version", "status", "reason"),
    [
        ("999", 404, "no version 999"),
        ("no-such-alias", 404, "no version or alias"),
        ("1 OR 1=1", 422, "model_version"),
    ],
)
def test_unknown_model_versions_are_refused(ab_client, heads, version, status, reason):
    answer = ab_client.post(
        "/predict", data={"designation": "x", "model_version": version}, headers=heads["admin"]
    )
    assert answer.status_code == status, answer.text
    assert reason in answer.json()["detail"]


def test_a_model_version_that_cannot_load_is_a_422(ab_client, heads, ab_served):
    answer = ab_client.post(
        "/predict",
        data={"designation": "x", "model_version": ab_served.broken},
        headers=heads["admin"],
    )
    assert answer.status_code == 422
    assert f"version {ab_served.broken} cannot be served" in answer.json()["detail"]


# ---- the admin's decision (last: it moves this module's champion) -----------------------------


def test_promoting_the_challenger_from_the_live_test(ab_client, heads, ab_served):
    _start(ab_client, heads, challenger="challenger", challenger_percent=20)
    promoted = ab_client.post("/models/ab/promote", headers=heads["admin"])
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["champion"] == ab_served.challenger
    assert promoted.json()["previous_champion"] == ab_served.champion
    assert champion_version(MODEL_NAME) == ab_served.challenger
    assert ab_client.get("/models/ab", headers=heads["admin"]).json()["test"] is None
    current = wait_serving(ab_client, heads["admin"], ab_served.challenger)
    assert current["serving"]["version"] == ab_served.challenger
    entry = ab_client.get(
        "/monitoring/journal", params={"kind": "ab", "limit": 1}, headers=heads["reviewer"]
    ).json()[0]
    assert f"version {ab_served.challenger} promoted to champion" in entry["summary"]
    assert "by admin" in entry["summary"] and entry["details"]["action"] == "promote"
