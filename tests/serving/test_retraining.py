"""Retraining asked through the API runs in Dagster, not in the API: a real run of the
``retraining`` job, launched through a Dagster instance in a temporary DAGSTER_HOME, over a
DVC project whose seven stages are cheap commands (the real jobs, assets, DVC and launcher; only
the stages' work is trivial). Two apps share the database and the instance, as two replicas:
the one that did not ask reports the run, from start to success or failure with its reason."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from prodclass.db.session import session_scope, upgrade
from prodclass.db.tables import RetrainingRequest
from prodclass.db.users import create_user
from prodclass.pipelines.definitions import STAGES
from prodclass.pipelines.launcher import PID_TAG
from prodclass.serving.api.app import create_app
from prodclass.settings import Settings
from tests.servers import wait_for

pytestmark = pytest.mark.slow
PASSWORD = "admin-secret-1"


@dataclass
class Replicas:
    asking: TestClient  # the replica an admin asks
    other: TestClient  # another replica: same database, same Dagster instance
    headers: dict[str, str]
    settings: Settings


def _project(folder: Path, commands: dict[str, str]) -> Path:
    """A DVC project with the lifecycle's stages, each a cheap command (``echo`` by default)."""
    folder.mkdir()
    lines = ["stages:"] + [
        f"  {stage}:\n    cmd: {commands.get(stage, f'echo {stage}')!r}" for stage in STAGES
    ]
    (folder / "dvc.yaml").write_text("\n".join(lines) + "\n")
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=folder, check=True)
    return folder


@pytest.fixture
def replicas(request, tmp_path: Path) -> Iterator[Replicas]:
    """Two apps over one database and one Dagster home; ``request.param``: stage commands."""
    project = _project(tmp_path / "project", getattr(request, "param", {}))
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
    assert not [p for p in below if b"dagster" in Path(f"/proc/{p}/cmdline").read_bytes()]
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


@pytest.mark.parametrize("replicas", [{"train": "echo no memory >&2; exit 3"}], indirect=True)
def test_a_failed_stage_is_reported_with_its_reason(replicas):
    started = replicas.asking.post("/training/runs", headers=replicas.headers)
    assert started.status_code == 202, started.text
    ended = wait_for(lambda: _ended(replicas), "the retraining run to fail", 120)
    assert (ended["status"], ended["state"]) == ("FAILURE", "failed")
    assert ended["failure"].startswith("stage train failed: "), ended["failure"]
    assert "`dvc repro --single-item train` failed" in ended["failure"]
    assert "STEP_FAILURE" in ended["log_tail"] and "register" not in ended["log_tail"]
    # a finished run no longer holds the next one back
    again = replicas.other.post("/training/runs", headers=replicas.headers)
    assert again.status_code == 202, again.text
    wait_for(lambda: _ended(replicas), "the second run to end", 120)


@pytest.mark.parametrize("replicas", [{"ingest": "sleep 120"}], indirect=True)
def test_a_run_whose_process_died_is_reported_failed(replicas):
    """Killed (out of memory, a node lost): the run never reports its end; the launcher finds
    its process gone and the run is marked failed for every replica."""
    started = replicas.asking.post("/training/runs", headers=replicas.headers)
    run = started.json()
    pid = _run_process(replicas, run["id"])
    events = lambda: _events(replicas, run["id"])  # noqa: E731
    wait_for(lambda: 'Started execution of step "ingest"' in events(), "the stage to start", 60)
    os.killpg(pid, signal.SIGKILL)  # the run's session: the run, DVC and the stage
    ended = wait_for(lambda: _ended(replicas), "the dead run to be reported", 30)
    assert (ended["status"], ended["state"]) == ("FAILURE", "failed")
    assert f"pid {pid}" in ended["failure"] and "gone" in ended["failure"]
