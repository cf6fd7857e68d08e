"""A configured model whose every load fails (a corrupt version; the registry answers) is
retried by the recovery duty with a doubling wait, not on every poll forever; each failure is
in the journal and ``/ready`` says when the next attempt comes."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from prodclass.db.session import session_scope, upgrade
from prodclass.db.users import create_user
from prodclass.monitoring import journal
from prodclass.serving.api.app import create_app
from tests.servers import wait_for
from tests.serving.conftest import PASSWORDS, Served, login

POLL = 0.25


def load_failures() -> float:
    return REGISTRY.get_sample_value("prodclass_model_load_failures_total") or 0.0


def test_a_corrupt_champion_is_retried_with_backoff(served: Served, tmp_path):
    state = tmp_path / "state"
    settings = served.settings.model_copy(
        update={
            "state_dir": state,
            "mlflow_tracking_uri": served.settings.tracking_uri,
            "database_url": f"sqlite:///{tmp_path / 'app.db'}",  # its own journal
            "model_uri": f"models:/{served.settings.registered_model_name}/{served.broken_version}",
            "model_poll_seconds": POLL,
            "monitoring_refresh_seconds": 0.0,
        }
    )
    upgrade(settings.db_url)
    with session_scope(settings.db_url) as session:
        create_user(session, "admin", PASSWORDS["admin"], "admin")
    before = load_failures()
    with TestClient(create_app(settings)) as client:
        start = time.monotonic()
        body = wait_for(
            lambda: (
                (r := client.get("/ready")).status_code == 503
                and any("next attempt in" in p for p in r.json()["problems"])
                and r.json()
            ),
            "/ready to say when the next attempt comes",
            30,
        )
        time.sleep(16 * POLL)  # 16 polls: without backoff, about one load each
        elapsed = time.monotonic() - start
        failed = load_failures() - before
        entries = journal.entries(settings.db_url, kind="model")
        api_entries = client.get(
            "/monitoring/journal", params={"kind": "model"}, headers=login(client, "admin")
        )
    problems = " ".join(body["problems"])
    assert "cannot load it" in problems and "failed attempts in a row: 1" in problems, problems
    waits = sorted(e.details["next_attempt_seconds"] for e in entries)
    assert waits[:3] == [2 * POLL, 4 * POLL, 8 * POLL], waits  # doubling
    assert all("cannot load it" in e.summary for e in entries)
    # the load at start plus one attempt per failure seen, far fewer than one per poll
    assert failed <= len(entries) + 2 and failed < elapsed / POLL / 2, (failed, elapsed)
    assert api_entries.status_code == 200 and api_entries.json(), api_entries.text
