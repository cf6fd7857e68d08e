"""The CLI against a real `mlflow server` on loopback, backed by the machine's real PostgreSQL.

Needs ``PRODCLASS_TEST_POSTGRES_URL`` (e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``)
naming a server where that role may create databases. Without it (or when the server does not
answer) the tests are skipped, unless ``PRODCLASS_REQUIRE_POSTGRES=1`` (CI), where they fail.

Each run gets a fresh database (dropped at teardown), a fresh artifacts folder and a server on a
free loopback port; training, evaluation and registration then go through the tracking server,
and the tests check the rows in PostgreSQL and the files in the artifacts folder directly.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from tests.conftest import PROJECT_ROOT, copy_subset
from tests.servers import free_port as _free_port
from tests.servers import start_process, stop_process
from tests.servers import tail as _tail
from tests.servers import with_database as _with_database
from typer.testing import CliRunner

from prodclass.cli.main import app
from prodclass.data.layout import ChallengeLayout
from prodclass.settings import get_settings

pytestmark = pytest.mark.postgres

STARTUP_TIMEOUT_S = 90.0
MODEL_NAME = "prodclass"

runner = CliRunner()


def _health(url: str) -> int | None:
    # No proxies: the server is on loopback and nothing may leave the machine.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url}/health", timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def _run(*args: object):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"prodclass {' '.join(map(str, args))}:\n{result.output}"
    return result


@dataclass(frozen=True)
class Server:
    url: str
    database_url: str  # libpq URL of the test database, for direct queries
    artifacts: Path
    log: Path


@pytest.fixture(scope="module")
def mlflow_server(
    postgres_url: str, database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """`mlflow server` on a free loopback port, PostgreSQL backend, proxied local artifacts."""
    root = tmp_path_factory.mktemp("mlflow-server")
    artifacts = root / "artifacts"
    artifacts.mkdir()
    log = root / "server.log"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri",
        _with_database(postgres_url, database, "postgresql+psycopg"),
        "--serve-artifacts",
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PRODCLASS_"))}
    # No huey job runner: nothing here needs it and it would leave state in /dev/shm.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    # its own process group, so teardown stops the server and the uvicorn worker it spawns
    proc = start_process(command, log, env=env, cwd=root)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            status = _health(url)
            if status == 200:
                break
            if proc.poll() is not None:
                pytest.fail(
                    f"mlflow server exited with code {proc.returncode} before answering "
                    f"{url}/health; log tail:\n{_tail(log)}",
                    pytrace=False,
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"mlflow server did not answer 200 on {url}/health within "
                    f"{STARTUP_TIMEOUT_S:.0f} s (last status {status}); log tail:\n"
                    f"{_tail(log)}",
                    pytrace=False,
                )
            time.sleep(0.5)
        yield Server(url, _with_database(postgres_url, database), artifacts, log)
    finally:
        stop_process(proc, timeout=15)


@dataclass(frozen=True)
class Registered:
    root: Path
    state: Path
    server: Server
    train_report: dict
    decision: dict


@pytest.fixture(scope="module")
def registered(
    mlflow_server: Server, six_codes_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registered]:
    """Prepare, train, evaluate and register one model through the tracking server. The
    server, not the model, is under test: 240 real products of six types are enough."""
    root = tmp_path_factory.mktemp("cli-server")
    state = root / "state"
    mp = pytest.MonkeyPatch()
    mp.setenv("PRODCLASS_MLFLOW_TRACKING_URI", mlflow_server.url)
    mp.setenv("PRODCLASS_STATE_DIR", str(state))
    mp.setenv("PRODCLASS_DATA_DIR", str(six_codes_data))
    mp.setenv("PRODCLASS_PARAMS_FILE", str(PROJECT_ROOT / "params.yaml"))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
    no_proxy = ",".join(filter(None, ["127.0.0.1", "localhost", os.environ.get("NO_PROXY")]))
    mp.setenv("NO_PROXY", no_proxy)
    mp.setenv("no_proxy", no_proxy)
    get_settings.cache_clear()
    try:
        assert get_settings().tracking_uri == mlflow_server.url
        prepared, model = root / "prepared", root / "model"
        _run("data", "prepare", "--out", prepared)
        # the server, not the model, is under test: the fast text family trains
        _run(
            "train",
            "--prepared",
            prepared,
            "--out",
            model,
            "--report",
            root / "train.json",
            "--model-family",
            "tfidf-linear",
        )
        _run(
            "evaluate",
            "--prepared",
            prepared,
            "--model",
            model,
            "--train-report",
            root / "train.json",
            "--out",
            root / "test.json",
        )
        _run(
            "models",
            "register",
            "--train-report",
            root / "train.json",
            "--evaluation",
            root / "test.json",
            "--prepared",
            prepared,
            "--out",
            root / "register.json",
        )
        yield Registered(
            root,
            state,
            mlflow_server,
            json.loads((root / "train.json").read_text()),
            json.loads((root / "register.json").read_text()),
        )
    finally:
        import mlflow

        # configure_mlflow made the (soon dead) server the process-wide default, and MLflow
        # copied it into MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI; undo both for later tests.
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        mp.undo()
        get_settings.cache_clear()


def test_first_version_is_registered_and_promoted(registered: Registered) -> None:
    decision = registered.decision
    assert decision["version"] == "1" and decision["promoted"], decision
    assert decision["tracking_uri"] == registered.server.url
    listing = json.loads(_run("models", "list", "--json").stdout)
    assert [(v["version"], v["aliases"]) for v in listing] == [("1", ["champion"])]


def test_champion_scores_a_small_real_folder(
    registered: Registered, sample: Path, tmp_path: Path
) -> None:
    data = copy_subset(sample, tmp_path / "data")
    out = tmp_path / "r.json"
    _run("evaluate", "--data", data, "--model", "models:/prodclass@champion", "--out", out)
    report = json.loads(out.read_text())
    n_rows = len(pd.read_csv(ChallengeLayout(data).y_train, index_col=0))
    assert report["n"] == n_rows > 0
    assert report["model_uri"] == "models:/prodclass@champion"
    for key in ("accuracy", "weighted_f1", "macro_f1"):
        assert 0 <= report[key] <= 1, (key, report[key])
    assert report["per_class"]
    assert sum(c["support"] for c in report["per_class"].values()) == n_rows


def test_run_is_on_the_server(registered: Registered) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=registered.server.url, registry_uri=registered.server.url)
    run = client.get_run(registered.train_report["run_id"])
    assert "cv_all_weighted_f1" in run.data.metrics  # the cross-validated estimate
    assert run.info.status == "FINISHED"
    assert client.get_model_version_by_alias(MODEL_NAME, "champion").run_id == run.info.run_id


def test_registry_rows_are_in_postgresql(registered: Registered) -> None:
    import psycopg

    with psycopg.connect(registered.server.database_url, connect_timeout=5) as conn:
        models = conn.execute("SELECT name FROM registered_models").fetchall()
        versions = conn.execute(
            "SELECT name, version, run_id FROM model_versions ORDER BY version"
        ).fetchall()
        aliases = conn.execute(
            "SELECT name, alias, version FROM registered_model_aliases"
        ).fetchall()
    assert models == [(MODEL_NAME,)]
    assert versions == [(MODEL_NAME, 1, registered.train_report["run_id"])]
    assert aliases == [(MODEL_NAME, "champion", 1)]


def test_artifacts_land_in_the_server_destination_not_the_embedded_store(
    registered: Registered,
) -> None:
    cards = list(registered.server.artifacts.rglob("model.json"))
    assert cards, f"no model.json below {registered.server.artifacts}"
    assert not (registered.state / "mlflow.db").exists()
    assert not (registered.state / "mlartifacts").exists()
    assert not list(registered.root.rglob("mlflow.db"))
