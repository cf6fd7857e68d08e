"""`prodclass pipeline ui` as a real process: Dagster's web UI answers GraphQL on the port the
settings give, lists the jobs, schedule and sensor of the code location's Definitions, works on
the Dagster instance of PRODCLASS_DAGSTER_HOME (runs launched the way the API launches them),
and a SIGTERM stops it together with the code server it started; `--read-only` takes away
launching runs."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from tests.servers import free_port, start_process, stop_process, tail, wait_for
from tests.serving.conftest import PRODCLASS

from prodclass.pipelines.definitions import defs
from prodclass.pipelines.instance import CODE_LOCATION

pytestmark = pytest.mark.slow  # two Python processes importing the pipeline, on shared cores

QUERY = """
{
  workspaceOrError {
    ... on Workspace {
      locationEntries {
        name
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
  repositoriesOrError {
    ... on RepositoryConnection {
      nodes { location { name } jobs { name } schedules { name } sensors { name } }
    }
  }
  instance { runLauncher { name } }
  permissions { permission value }
}
"""


def _graphql(url: str) -> dict:
    answer = httpx.post(f"{url}/graphql", json={"query": QUERY}, timeout=10)
    answer.raise_for_status()
    body = answer.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def _loaded(url: str, process, log: Path) -> dict | None:
    """The GraphQL answer once the code location is loaded (None while the server starts)."""
    if process.poll() is not None:
        pytest.fail(f"prodclass pipeline ui exited {process.returncode}:\n{tail(log)}")
    try:
        data = _graphql(url)
    except httpx.HTTPError:
        return None
    for entry in data["workspaceOrError"]["locationEntries"]:
        loaded = entry["locationOrLoadError"] or {}
        if loaded.get("__typename") == "PythonError":
            pytest.fail(f"code location {entry['name']} failed to load: {loaded['message']}")
    return data if data["repositoriesOrError"]["nodes"] else None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@contextmanager
def running_ui(folder: Path, *options: str) -> Iterator[tuple[subprocess.Popen, dict, Path]]:
    """`prodclass pipeline ui` on a free port given by the settings, on an instance folder of
    its own; yields the process, its first GraphQL answer with the code location loaded, and
    its log; the process group is stopped at the end of the block."""
    home = folder / "dagster-home"
    home.mkdir()
    # a dagster.yaml naming no run launcher: runs start as the API's do (LocalProcessRunLauncher)
    (home / "dagster.yaml").write_text("telemetry: {enabled: false}\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRODCLASS_")} | {
        "PRODCLASS_STATE_DIR": str(folder / "state"),
        "PRODCLASS_DAGSTER_HOME": str(home),
        "PRODCLASS_DAGSTER_UI_HOST": "127.0.0.1",
        "PRODCLASS_DAGSTER_UI_PORT": str(port),
        "NO_PROXY": "127.0.0.1,localhost",
    }
    log = folder / "ui.log"
    process = start_process([*PRODCLASS, "pipeline", "ui", *options], log, env=env, cwd=folder)
    url = f"http://127.0.0.1:{port}"
    try:
        data = wait_for(
            lambda: _loaded(url, process, log),
            "the Dagster UI to serve the code location",
            timeout=240,
            every=1.0,
            detail=lambda: tail(log),
        )
        yield process, data, log
    finally:
        stop_process(process)


def _may_launch(data: dict) -> bool:
    (launch,) = [p for p in data["permissions"] if p["permission"] == "launch_pipeline_execution"]
    return launch["value"]


def test_the_ui_lists_the_code_locations_jobs_schedule_and_sensor(tmp_path):
    with running_ui(tmp_path) as (process, data, log):
        (repository,) = data["repositoriesOrError"]["nodes"]
        assert repository["location"]["name"] == CODE_LOCATION
        served_jobs = {job["name"] for job in repository["jobs"]}
        # Dagster adds hidden jobs of its own (``__ASSET_JOB``) next to the defined ones
        assert {name for name in served_jobs if not name.startswith("__")} == {
            job.name for job in defs.jobs
        }
        assert {s["name"] for s in repository["schedules"]} == {s.name for s in defs.schedules}
        assert {s["name"] for s in repository["sensors"]} == {s.name for s in defs.sensors}
        assert data["instance"]["runLauncher"]["name"] == "LocalProcessRunLauncher"
        # the instance of PRODCLASS_DAGSTER_HOME
        assert (tmp_path / "dagster-home" / "history" / "runs.db").is_file()
        assert _may_launch(data)

        # SIGTERM to the UI alone (a supervisor's stop): it exits cleanly and shuts its code
        # server down, rather than leaving it until the code server misses its heartbeats
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, tail(log)
        wait_for(lambda: not _group_alive(process.pid), "the code server to stop", timeout=90)
        assert "No heartbeat received" not in log.read_text(errors="replace"), tail(log)


def test_a_read_only_ui_may_not_launch_runs(tmp_path):
    with running_ui(tmp_path, "--read-only") as (_, data, _):
        assert data["repositoriesOrError"]["nodes"]
        assert not _may_launch(data)
