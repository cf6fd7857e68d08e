"""Alerts reach a person: a real `prodclass serve` answers 5xx to real requests, a real
Prometheus (Debian's) evaluates the shipped alert rules against its /metrics, a real
Alertmanager with the shipped config calls the API's webhook with the shared token, and the
alert is in the monitoring journal that GET /monitoring/alerts reads. Also the webhook's own
rules: who may call it, what payload it takes, and that repeats are written once.

The served API has no model (a model URI that does not exist): each POST /predict is a 503,
the server errors the shipped ``ProdclassServerErrors`` rule counts. That rule waits 10 min
(``for: 10m``) before firing; the test's copy of the rules says ``for: 2s`` for it, and only
that (its expression and every other rule are the shipped ones)."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from prodclass.db.session import upgrade
from prodclass.monitoring import journal
from prodclass.serving.api.app import create_app
from prodclass.settings import Settings
from tests.conftest import PROJECT_ROOT
from tests.servers import (
    PROMETHEUS,
    free_port,
    running_prometheus,
    start_process,
    stop_process,
    wait_for,
    wait_until_up,
    with_database,
)
from tests.serving.conftest import PRODCLASS, database_with_accounts

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
WEBHOOK_TOKEN = "alert-webhook-test-token-" + "z" * 20
JWT_SECRET = "alert-test-signing-key-" + "q" * 32
PASSWORDS = {"admin": "admin-secret-1", "reviewer": "reviewer-secret-1", "client": "client-1x"}
RULE = "ProdclassServerErrors"
RULE_FOR = "2s"  # instead of the shipped 10m


@dataclass
class Api:
    url: str
    settings: Settings

    def login(self, role: str) -> dict[str, str]:
        answer = httpx.post(
            f"{self.url}/token", data={"username": role, "password": PASSWORDS[role]}
        )
        assert answer.status_code == 200, answer.text
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def _settings(root: Path, **overrides) -> Settings:
    """An API without a model, on a SQLite database of its own holding one user per role."""
    settings = Settings(
        state_dir=root / "state",
        database_url=f"sqlite:///{root / 'app.db'}",
        mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        model_uri=str(root / "no-model"),
        model_poll_seconds=0.0,
        monitoring_refresh_seconds=0.0,
        jwt_secret=JWT_SECRET,
        api_rate_limit_per_minute=1_000_000,
        api_rate_limit_burst=100_000,
        **overrides,
    )
    database_with_accounts(settings.db_url, PASSWORDS)
    return settings


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[Api]:
    """`prodclass serve` with the webhook token set; up (/health), with no model to serve."""
    root = tmp_path_factory.mktemp("alerting-api")
    settings = _settings(root, alert_webhook_token=WEBHOOK_TOKEN)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRODCLASS_")} | {
        "PRODCLASS_STATE_DIR": str(settings.state_dir),
        "PRODCLASS_DATABASE_URL": settings.db_url,
        "PRODCLASS_MLFLOW_TRACKING_URI": settings.tracking_uri,
        "PRODCLASS_MODEL_URI": settings.model_uri,
        "PRODCLASS_MODEL_POLL_SECONDS": "0",
        "PRODCLASS_JWT_SECRET": JWT_SECRET,
        "PRODCLASS_ALERT_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
        "PRODCLASS_API_RATE_LIMIT_PER_MINUTE": "1000000",
        "PRODCLASS_API_RATE_LIMIT_BURST": "100000",
        "PRODCLASS_LOG_LEVEL": "WARNING",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    port = free_port()
    log = root / "serve.log"
    process = start_process(
        [*PRODCLASS, "serve", "--host", "127.0.0.1", "--port", str(port)], log, env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        up = lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200  # noqa: E731
        wait_until_up(process, log, up, "prodclass serve")
        yield Api(url, settings)
    finally:
        stop_process(process)


# ---- the webhook's rules, against the served API ------------------------------------------
def _payload(status: str = "firing", fingerprint: str = "a1b2c3d4e5f60718", **alert) -> dict:
    starts = alert.pop("startsAt", "2026-12-01T10:00:00.123Z")
    return {
        "version": "4",
        "status": status,
        "receiver": "prodclass-api",
        "groupKey": '{}:{alertname="ProdclassApiDown"}',
        "externalURL": "http://alertmanager:9093",
        "alerts": [
            {
                "status": status,
                "labels": {"alertname": "ProdclassApiDown", "severity": "critical"},
                "annotations": {"summary": "The prediction API does not answer"},
                "startsAt": starts,
                "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-12-01T10:05:00Z",
                "generatorURL": "http://prometheus:9090/graph",
                "fingerprint": fingerprint,
            }
            | alert
        ],
    }


def test_only_alertmanagers_token_or_an_admin_may_send_alerts(api):
    hook = f"{api.url}/monitoring/alerts"
    payload = _payload(fingerprint="00000000000000aa")
    assert httpx.post(hook, json=payload).status_code == 401
    wrong = httpx.post(hook, json=payload, headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401 and "webhook token" in wrong.json()["detail"]
    near = {"Authorization": f"Bearer {WEBHOOK_TOKEN[:-1]}x"}  # one character off
    assert httpx.post(hook, json=payload, headers=near).status_code == 401
    for role in ("client", "reviewer"):
        refused = httpx.post(hook, json=payload, headers=api.login(role))
        assert refused.status_code == 403, refused.text
    admin = httpx.post(hook, json=payload, headers=api.login("admin"))
    assert admin.status_code == 200 and admin.json() == {"received": 1, "recorded": 1}


def test_junk_payloads_are_refused_with_the_reason(api):
    hook = f"{api.url}/monitoring/alerts"
    token = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
    cases = {
        "version": _payload() | {"version": "3"},
        "alerts": _payload() | {"alerts": []},
        "status": _payload(status="exploded"),
        "startsAt": _payload(startsAt="yesterday"),
        "endsAt": _payload("resolved", endsAt="2026-12-01T10:05:00"),  # no offset: which zone?
        "fingerprint": _payload(fingerprint="../../etc"),
        "labels": _payload(labels={"alertname": "x\x00y"}),
    }
    for field, body in cases.items():
        answer = httpx.post(hook, json=body, headers=token)
        assert answer.status_code == 422, (field, answer.text)
        assert field in answer.json()["detail"], (field, answer.json())
    not_json = httpx.post(
        hook, content=b"{not json", headers=token | {"Content-Type": "application/json"}
    )
    assert not_json.status_code == 422


def test_repeated_notifications_are_written_once_and_resolution_is_kept(api):
    hook = f"{api.url}/monitoring/alerts"
    token = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
    fingerprint = "feedfacecafe0001"
    firing = _payload(fingerprint=fingerprint)
    answers = [httpx.post(hook, json=firing, headers=token).json() for _ in range(3)]
    assert answers == [{"received": 1, "recorded": 1}] + [{"received": 1, "recorded": 0}] * 2
    reviewer = api.login("reviewer")

    def ours() -> list[dict]:
        listed = httpx.get(f"{api.url}/monitoring/alerts", headers=reviewer)
        assert listed.status_code == 200, listed.text
        return [a for a in listed.json() if a["fingerprint"] == fingerprint]

    (alert,) = ours()
    assert alert["status"] == "firing" and alert["ends_at"] is None
    assert alert["name"] == "ProdclassApiDown" and alert["severity"] == "critical"
    resolved = _payload("resolved", fingerprint=fingerprint)
    assert httpx.post(hook, json=resolved, headers=token).json()["recorded"] == 1
    assert httpx.post(hook, json=resolved, headers=token).json()["recorded"] == 0
    (alert,) = ours()  # one alert, its latest status
    assert alert["status"] == "resolved" and alert["ends_at"].startswith("2026-12-01T10:05")
    # the same fingerprint firing again later is a new alert: listed before the resolved one
    again = _payload(fingerprint=fingerprint, startsAt="2026-12-01T11:00:00Z")
    assert httpx.post(hook, json=again, headers=token).json()["recorded"] == 1
    assert [a["status"] for a in ours()] == ["firing", "resolved"]
    journal = httpx.get(
        f"{api.url}/monitoring/journal", params={"kind": "alert", "limit": 500}, headers=reviewer
    ).json()
    written = [e for e in journal if e["details"]["fingerprint"] == fingerprint]
    assert len(written) == 3  # firing, resolved, firing again: no repeat
    assert all(e["kind"] == "alert" for e in written)
    assert written[-1]["summary"] == "ProdclassApiDown firing: The prediction API does not answer"


def test_without_a_configured_token_alertmanager_gets_a_503_saying_so(tmp_path):
    with TestClient(create_app(_settings(tmp_path))) as client:
        answer = client.post(
            "/monitoring/alerts",
            json=_payload(),
            headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
        )
        assert answer.status_code == 503
        assert "PRODCLASS_ALERT_WEBHOOK_TOKEN" in answer.json()["detail"]
        admin = client.app.state.services.tokens.issue("admin", "admin")
        taken = client.post(
            "/monitoring/alerts", json=_payload(), headers={"Authorization": f"Bearer {admin}"}
        )
        assert taken.status_code == 200, taken.text


def test_replicas_told_the_same_alert_at_once_write_it_once(postgres_url, database):
    """Several API replicas get the same notification (Alertmanager behind a load balancer
    retries, or two Alertmanagers): the unique key of PostgreSQL keeps one entry, and every
    writer but one is told it was already there (no error)."""
    url = with_database(postgres_url, database)
    upgrade(url)
    start = threading.Barrier(8)

    def write(_: int) -> int | None:
        start.wait()
        details = {"fingerprint": "0123456789abcdef"}
        return journal.write(url, "alert", "X firing", details, None, "alert:0123456789abcdef:t")

    with ThreadPoolExecutor(8) as pool:
        written = list(pool.map(write, range(8)))
    assert len([w for w in written if w is not None]) == 1 and written.count(None) == 7
    assert len(journal.entries(url, 50, "alert")) == 1


# ---- Prometheus -> Alertmanager -> the API's journal ----------------------------------------
def _rules_with_short_wait(folder: Path) -> Path:
    """The shipped rules, ``for`` of RULE shortened (documented above); nothing else changed."""
    shipped = yaml.safe_load((PROJECT_ROOT / "deploy/prometheus/alerts.yml").read_text())
    (rule,) = [r for g in shipped["groups"] for r in g["rules"] if r.get("alert") == RULE]
    assert rule["for"] == "10m"
    rule["for"] = RULE_FOR
    path = folder / "alerts.yml"
    path.write_text(yaml.safe_dump(shipped))
    return path


@pytest.fixture
def alertmanager(api, tmp_path) -> Iterator[str]:
    """Alertmanager with deploy/alertmanager's config: the webhook pointed at the test API,
    the token in a file as credentials_file, notifications after 1 s instead of 30 s."""
    if ALERTMANAGER is None:
        pytest.skip("needs Alertmanager (Debian `prometheus-alertmanager`; make test-deps)")
    config = yaml.safe_load((PROJECT_ROOT / "deploy/alertmanager/alertmanager.yml").read_text())
    config["route"]["group_wait"] = "1s"
    config["route"]["group_interval"] = "1s"
    token_file = tmp_path / "webhook-token"
    token_file.write_text(WEBHOOK_TOKEN)
    token_file.chmod(0o600)
    (receiver,) = [r for r in config["receivers"] if r["name"] == config["route"]["receiver"]]
    (webhook,) = receiver["webhook_configs"]
    assert webhook["url"] == "http://api:8000/monitoring/alerts"  # the compose service
    webhook["url"] = f"{api.url}/monitoring/alerts"
    webhook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    log = tmp_path / "alertmanager.log"
    process = start_process(
        [
            ALERTMANAGER,
            f"--config.file={path}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # one instance: no gossip port
        ],
        log,
        env=os.environ | {"NO_PROXY": "127.0.0.1,localhost"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        ready = lambda: httpx.get(f"{url}/-/ready").status_code == 200  # noqa: E731
        wait_until_up(process, log, ready, "alertmanager", timeout=60)
        yield url
    finally:
        stop_process(process)


@pytest.fixture
def prometheus(api, alertmanager, tmp_path) -> Iterator[str]:
    """Prometheus with deploy/prometheus's config: scraping the test API every second,
    evaluating the rules every second, sending alerts to the test Alertmanager."""
    if PROMETHEUS is None:
        pytest.skip("needs Debian's prometheus (make test-deps installs it)")
    with running_prometheus(
        tmp_path, api.url, _rules_with_short_wait(tmp_path), alertmanager
    ) as url:
        yield url


def test_server_errors_fire_the_shipped_rule_and_the_alert_lands_in_the_journal(
    api, alertmanager, prometheus
):
    client, reviewer = api.login("client"), api.login("reviewer")
    started = datetime.now(UTC)

    def state() -> str | None:
        """RULE's state in Prometheus (pending, firing), sending failing predictions meanwhile:
        errors spread over several scrapes, so the counter's rate is above zero."""
        for _ in range(5):
            answer = httpx.post(
                f"{api.url}/predict", data={"designation": "lampe de chevet"}, headers=client
            )
            assert answer.status_code == 503, answer.text  # no model: a server error
        alerts = httpx.get(f"{prometheus}/api/v1/alerts").json()["data"]["alerts"]
        found = [a["state"] for a in alerts if a["labels"]["alertname"] == RULE]
        return "firing" if "firing" in found else None

    wait_for(state, f"Prometheus to fire {RULE}", timeout=40, every=0.3)

    def journaled() -> dict | None:
        listed = httpx.get(f"{api.url}/monitoring/alerts", headers=reviewer)
        assert listed.status_code == 200, listed.text
        return next((a for a in listed.json() if a["name"] == RULE), None)

    alert = wait_for(journaled, "Alertmanager to write the alert to the journal", timeout=30)
    assert alert["status"] == "firing" and alert["severity"] == "critical"
    assert alert["summary"] == "More than 5% of API requests fail with 5xx"
    assert datetime.fromisoformat(alert["starts_at"]) >= started.replace(microsecond=0)
    assert alert["labels"]["alertname"] == RULE
    journal = httpx.get(
        f"{api.url}/monitoring/journal", params={"kind": "alert"}, headers=reviewer
    ).json()
    (entry,) = [e for e in journal if e["details"]["labels"]["alertname"] == RULE]
    assert entry["details"]["sent_by"] == "alertmanager"  # the shared token, not a user
    assert entry["details"]["receiver"] == "prodclass-api"
