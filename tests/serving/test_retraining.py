"""Retraining asked through the API runs in Dagster, not in the API: a real run of the
``retraining`` job, launched through a Dagster instance in a temporary DAGSTER_HOME, over a
DVC project whose seven stages are cheap commands (the real jobs, assets, DVC and launcher; only
the stages' work is trivial). Two apps share the database and the instance, as two replicas:
the one that did not ask reports the run, from start to success or failure with its reason.
Then the same through real `prodclass serve` processes and the web app's models page: the run
outlives the server that asked for it, and the page of another server follows it to its end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from prodclass.db.session import session_scope, upgrade
from prodclass.db.tables import RetrainingRequest
from prodclass.db.users import create_user
from prodclass.pipelines.definitions import STAGES
from prodclass.pipelines.instance import CODE_LOCATION
from prodclass.pipelines.launcher import PID_TAG
from prodclass.serving.api.app import create_app
from prodclass.settings import Settings, get_settings
from tests.servers import free_port, start_process, stop_process, wait_for, wait_until_up
from tests.serving.pipeline_project import dvc_project

pytestmark = pytest.mark.slow
PASSWORD = "admin-secret-1"


@dataclass
class Replicas:
    asking: TestClient  # the replica an admin asks
    other: TestClient  # another replica: same database, same Dagster instance
    headers: dict[str, str]
    settings: Settings


@pytest.fixture
def replicas(request, tmp_path: Path) -> Iterator[Replicas]:
    """Two apps over one database and one Dagster home. ``request.param``: commands of some
    stages (``stages``), the instance's ``dagster.yaml`` (none: the one-machine default)."""
    param = getattr(request, "param", {})
    project = dvc_project(tmp_path / "project", param.get("stages", {}))
    if "dagster_yaml" in param:
        (tmp_path / "dagster").mkdir()
        (tmp_path / "dagster" / "dagster.yaml").write_text(param["dagster_yaml"])
    settings = Settings(
        state_dir=tmp_path / "state",
        database_url=f"sqlite:///{tmp_path / 'app.db'}",
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        model_uri=str(tmp_path / "no-model"),  # nothing to serve: retraining needs no model
        model_poll_seconds=0.0,
        monitoring_refresh_seconds=0.0,
        jwt_secret="retraining-test-key-" + "r" * 32,
        dagster_home=tmp_path / "dagster",
        pipeline_dir=project,
    )
    upgrade(settings.db_url)
    with session_scope(settings.db_url) as session:
        create_user(session, "root", PASSWORD, "admin")
    with TestClient(create_app(settings)) as asking, TestClient(create_app(settings)) as other:
        token = asking.post("/token", data={"username": "root", "password": PASSWORD})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        yield Replicas(asking, other, headers, settings)


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def _ended(replicas: Replicas) -> dict | None:
    latest = replicas.other.get("/training/runs/latest", headers=replicas.headers)
    assert latest.status_code == 200, latest.text
    run = latest.json()
    return run if run["state"] not in ("queued", "running") else None


def _run_process(replicas: Replicas, run_id: str) -> int:
    instance = replicas.asking.app.state.services.retrainer.instance
    return int(instance.get_run_by_id(run_id).tags[PID_TAG])


def test_a_retraining_asked_of_one_replica_runs_in_dagster_and_another_follows_it(replicas):
    assert replicas.other.get("/training/runs/latest", headers=replicas.headers).status_code == 404
    started = replicas.asking.post("/training/runs", headers=replicas.headers)
    assert started.status_code == 202, started.text
    run = started.json()
    assert run["job"] == "retraining" and run["requested_by"] == "root"
    assert run["state"] in ("queued", "running"), run

    # the run id is recorded in the application database
    with session_scope(replicas.settings.db_url) as session:
        (recorded,) = session.scalars(select(RetrainingRequest)).all()
        assert (recorded.run_id, recorded.requested_by) == (run["id"], "root")

    # the run executes in a process of its own, which no process of the API's is a parent of
    pid = _run_process(replicas, run["id"])
    assert pid != os.getpid()
    below = _descendants(os.getpid())
    assert pid not in below
    assert not [p for p in below if _is_dagster(p)]
    assert run["id"].encode() in Path(f"/proc/{pid}/cmdline").read_bytes()  # running it now

    # one lifecycle run at a time, whichever replica is asked
    busy = replicas.other.post("/training/runs", headers=replicas.headers)
    assert busy.status_code == 409 and run["id"] in busy.json()["detail"]

    # the other replica follows it to the end, from the Dagster instance's run storage
    ended = wait_for(lambda: _ended(replicas), "the retraining run to end", 120)
    assert ended["id"] == run["id"]
    assert (ended["status"], ended["state"], ended["failure"]) == ("SUCCESS", "succeeded", None)
    assert ended["started"] <= ended["finished"]
    assert f"Started process for run (pid: {pid})" in _events(replicas, run["id"])
    for stage in STAGES:
        assert f'Finished execution of step "{stage}"' in _events(replicas, run["id"]), stage
    assert "RUN_SUCCESS" in ended["log_tail"]


def _events(replicas: Replicas, run_id: str) -> str:
    instance = replicas.other.app.state.services.retrainer.instance
    return "\n".join(entry.message for entry in instance.all_logs(run_id))


@pytest.mark.parametrize(
    "replicas", [{"stages": {"train": "echo no memory >&2; exit 3"}}], indirect=True
)
def test_a_failed_stage_is_reported_with_its_reason(replicas):
    started = replicas.asking.post("/training/runs", headers=replicas.headers)
    assert started.status_code == 202, started.text
    ended = wait_for(lambda: _ended(replicas), "the retraining run to fail", 120)
    assert (ended["status"], ended["state"]) == ("FAILURE", "failed")
    assert ended["failure"].startswith("stage train failed: "), ended["failure"]
    assert "`dvc repro --single-item train` failed" in ended["failure"]
    assert "STEP_FAILURE" in ended["log_tail"]
    assert 'Started execution of step "evaluate"' not in _events(replicas, ended["id"])
    # a finished run no longer holds the next one back
    again = replicas.other.post("/training/runs", headers=replicas.headers)
    assert again.status_code == 202, again.text
    wait_for(lambda: _ended(replicas), "the second run to end", 120)


@pytest.mark.parametrize("replicas", [{"stages": {"ingest": "sleep 120"}}], indirect=True)
def test_a_run_whose_process_died_is_reported_failed(replicas):
    """Killed (out of memory, a node lost): the run never reports its end; the launcher finds
    its process gone and the run is marked failed for every replica. Then a run terminated
    through Dagster: canceled, its process gone."""
    started = replicas.asking.post("/training/runs", headers=replicas.headers)
    run = started.json()
    pid = _run_process(replicas, run["id"])
    events = lambda: _events(replicas, run["id"])  # noqa: E731
    wait_for(lambda: 'Started execution of step "ingest"' in events(), "the stage to start", 60)
    os.killpg(pid, signal.SIGKILL)  # the run's session: the run, DVC and the stage
    ended = wait_for(lambda: _ended(replicas), "the dead run to be reported", 30)
    assert (ended["status"], ended["state"]) == ("FAILURE", "failed")
    assert f"pid {pid}" in ended["failure"] and "gone" in ended["failure"]

    # a run terminated through Dagster (its launcher) ends canceled, its stage stopped with it
    again = replicas.other.post("/training/runs", headers=replicas.headers).json()
    events = lambda: _events(replicas, again["id"])  # noqa: E731
    wait_for(lambda: 'Started execution of step "ingest"' in events(), "the stage to start", 60)
    instance = replicas.other.app.state.services.retrainer.instance
    assert instance.run_launcher.terminate(again["id"])
    ended = wait_for(lambda: _ended(replicas), "the run to be canceled", 60)
    assert (ended["id"], ended["status"], ended["state"]) == (again["id"], "CANCELED", "canceled")
    pid = _run_process(replicas, again["id"])
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), "the run's process to end", 30)


# as deployed (deploy/dagster/): runs queued for the daemon; SQLite stands in for PostgreSQL
QUEUED_INSTANCE = """\
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config: {max_concurrent_runs: 1, dequeue_interval_seconds: 1}
telemetry: {enabled: false}
"""


@pytest.mark.parametrize("replicas", [{"dagster_yaml": QUEUED_INSTANCE}], indirect=True)
def test_as_deployed_the_api_only_queues_and_the_dagster_daemon_launches(replicas, tmp_path):
    """With the instance's dagster.yaml queueing runs, a replica starts no process at all; the
    Dagster daemon (`dagster-daemon run`, as the compose service) launches the run through the
    code location it serves, and the other replica reports it done."""
    started = replicas.asking.post("/training/runs", headers=replicas.headers)
    assert started.status_code == 202, started.text
    run = started.json()
    assert (run["status"], run["state"]) == ("QUEUED", "queued")
    instance = replicas.asking.app.state.services.retrainer.instance
    assert PID_TAG not in instance.get_run_by_id(run["id"]).tags  # nothing launched here
    assert not [p for p in _descendants(os.getpid()) if _is_dagster(p)]
    assert replicas.other.post("/training/runs", headers=replicas.headers).status_code == 409

    daemon = start_process(
        [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-m", CODE_LOCATION],
        tmp_path / "daemon.log",
        env=os.environ | {"DAGSTER_HOME": str(replicas.settings.dagster_folder)},
    )
    try:
        ended = wait_for(lambda: _ended(replicas), "the daemon to run the queued run", 120)
    finally:
        stop_process(daemon)
    assert (ended["status"], ended["state"]) == ("SUCCESS", "succeeded"), ended
    assert 'Finished execution of step "register"' in _events(replicas, run["id"])


def _is_dagster(pid: int) -> bool:
    try:
        return b"dagster" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _serve(settings: Settings, state: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """A `prodclass serve` process with ``settings`` and a state folder of its own (a pod)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRODCLASS_")} | {
        "PRODCLASS_STATE_DIR": str(state),
        "PRODCLASS_DATABASE_URL": settings.db_url,
        "PRODCLASS_MLFLOW_TRACKING_URI": settings.tracking_uri,
        "PRODCLASS_MODEL_URI": settings.model_uri,
        "PRODCLASS_MODEL_POLL_SECONDS": "0",
        "PRODCLASS_MONITORING_REFRESH_SECONDS": "0",
        "PRODCLASS_JWT_SECRET": settings.jwt_secret.get_secret_value(),
        "PRODCLASS_DAGSTER_HOME": str(settings.dagster_home),
        "PRODCLASS_PIPELINE_DIR": str(settings.pipeline_dir),
        "PRODCLASS_LOG_LEVEL": "WARNING",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    command = [str(Path(sys.executable).with_name("prodclass")), "serve", "--port", str(port)]
    process = start_process([*command, "--host", "127.0.0.1"], log, env=env)
    url = f"http://127.0.0.1:{port}"
    up = lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200  # noqa: E731
    wait_until_up(process, log, up, "prodclass serve")
    return process, url


def _models_page(url: str, monkeypatch: pytest.MonkeyPatch, headers: dict) -> AppTest:
    monkeypatch.setenv("PRODCLASS_API_URL", url)
    get_settings.cache_clear()
    at = AppTest.from_string(
        "from prodclass.ui.views import models\nmodels.render()\n", default_timeout=120
    )
    at.session_state["token"] = headers["Authorization"].removeprefix("Bearer ")
    at.session_state["role"] = at.session_state["username"] = "root"
    return at.run()


def _page_text(at: AppTest) -> str:
    kinds = ("markdown", "success", "error", "info", "code")
    return "\n".join(str(e.value) for kind in kinds for e in getattr(at, kind))


@pytest.mark.parametrize("replicas", [{"stages": {"evaluate": "sleep 6"}}], indirect=True)
def test_the_web_app_follows_a_run_that_outlives_the_server_that_asked(
    replicas, tmp_path, monkeypatch
):
    with ExitStack() as stack:
        first, first_url = _serve(replicas.settings, tmp_path / "state-a", tmp_path / "a.log")
        stack.callback(stop_process, first)
        second, second_url = _serve(replicas.settings, tmp_path / "state-b", tmp_path / "b.log")
        stack.callback(stop_process, second)
        stack.callback(get_settings.cache_clear)

        page = _models_page(first_url, monkeypatch, replicas.headers)
        page.button[0].click().run()  # "Start a retraining run", on the first server's page
        assert "asked of Dagster" in page.success[0].value, _page_text(page)
        run_id = page.success[0].value.split()[2]
        pid = _run_process(replicas, run_id)
        assert pid not in _descendants(first.pid)  # not the server's child, nor its workers'
        stop_process(first)  # the server that asked goes away (SIGTERM to its process group)

        page = _models_page(second_url, monkeypatch, replicas.headers)
        assert f"Latest run `{run_id}`" in _page_text(page)
        assert "**running**" in _page_text(page) or "**queued**" in _page_text(page)

        def ended() -> AppTest | None:
            again = page.run()
            return again if "**succeeded**" in _page_text(again) else None

        page = wait_for(ended, "the page to show the run succeeded", 120)
        assert "RUN_SUCCESS" in _page_text(page) and not page.error
