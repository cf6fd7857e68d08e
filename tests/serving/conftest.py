"""A served registry for the API tests: real models trained on real sample products.

Version 1 is `tfidf-linear` (text only), version 2 the champion family `late-fusion` on
EfficientNet-Lite0 features (text and photos; what the API serves first), version 3 a copy of
version 1 whose weights file is corrupt (a load must refuse it). Users of each role exist in
the application database. ``clip_served``: a tiny `clip-style` model (one text-photo space),
served from its folder with the catalogue index of its products, for text-to-photo search.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow
import pytest
from fastapi.testclient import TestClient

from prodclass.data.layout import ChallengeLayout, read_features
from prodclass.data.prepare import load_prepared
from prodclass.data.validate import validate
from prodclass.db.session import session_scope, upgrade
from prodclass.db.users import create_user
from prodclass.models.registry import create
from prodclass.registry.model_registry import log_model, promote, register
from prodclass.registry.tracking import configure_mlflow
from prodclass.serving.api.app import create_app
from prodclass.serving.predictor import Predictor
from prodclass.serving.similarity import CatalogueIndex, index_folder
from prodclass.settings import Settings, get_settings
from prodclass.training.cv import CVResult, cv_report
from prodclass.training.evaluate import log_cv_report
from prodclass.training.train import CV_DIR, input_example, train_model
from tests.servers import free_port, start_process, stop_process, wait_for, wait_until_up

SERVER_JWT_SECRET = "server-test-key-" + "y" * 32  # what `prodclass serve` signs tokens with
PASSWORDS = {
    "admin": "admin-secret-1",
    "reviewer": "reviewer-secret-1",
    "client": "client-secret-1",
}


def database_with_accounts(db_url: str, passwords: dict[str, str] = PASSWORDS) -> None:
    """The application schema at ``db_url`` and one account per role, named after it."""
    upgrade(db_url)
    with session_scope(db_url) as session:
        for role, password in passwords.items():
            create_user(session, role, password, role)


# the champion family (params.yaml), with its inner folds cut to two for speed
CHAMPION_FAMILY = "late-fusion"
CHAMPION_FAST = {"fusion_folds": 2, "threads": 1}
# clip-style at its cheapest: frozen photo features, the n-gram bag alone (no word vectors),
# narrow projections, a few alignment epochs on the labelled pairs only, a linear probe
CLIP_TINY = {
    "text_buckets": 2**12,
    "text_dim": 32,
    "text_vectors": None,
    "hidden": 64,
    "embed_dim": 32,
    "unlabelled": False,
    "align_epochs": 15,
    "align_patience": 15,
    "align_batch_size": 64,
    "align_lr": 1e-3,
    "threads": 1,
}


@dataclass
class Served:
    state: Path
    settings: Settings
    text_version: str  # tfidf-linear
    multimodal_version: str  # the champion
    broken_version: str


@pytest.fixture(scope="session")
def served(six_codes_prepared: Path, sample: Path, tmp_path_factory) -> Iterator[Served]:
    state = tmp_path_factory.mktemp("serving") / "state"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRODCLASS_STATE_DIR", str(state))
        mp.setenv("PRODCLASS_DATA_DIR", str(sample))
        mp.delenv("PRODCLASS_MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("PRODCLASS_DATABASE_URL", raising=False)
        mp.setenv("PRODCLASS_JWT_SECRET", "test-signing-key-" + "x" * 32)
        get_settings.cache_clear()
        settings = get_settings()
        configure_mlflow(settings)
        versions = []
        for family, params in (("tfidf-linear", {}), (CHAMPION_FAMILY, CHAMPION_FAST)):
            # the champion's out-of-fold answers are its drift reference: five folds train
            # on 80 % of the rows, as the pipeline does, so they are as sure as the refit
            folds = 5 if family == CHAMPION_FAMILY else 2
            result = train_model(
                six_codes_prepared, family, params, settings, state / family, False, folds=folds
            )
            if family == CHAMPION_FAMILY:  # its out-of-fold report, as the pipeline logs it
                cv = CVResult.load(state / family / CV_DIR)
                log_cv_report(result.run_id, cv_report(cv), cv)
            versions.append(register(result.model_uri, settings.registered_model_name, {}, {}))
        broken = _register_corrupt_copy(state / "tfidf-linear", settings, six_codes_prepared)
        promote(settings.registered_model_name, versions[0])
        promote(settings.registered_model_name, versions[1])
        database_with_accounts(settings.db_url)
        yield Served(state, settings, versions[0], versions[1], broken)
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def served_registry_is_mlflows_default(request: pytest.FixtureRequest) -> None:
    """A test over ``served`` reaches its registry through MLflow's process-wide URI, as the
    API does; whatever ran before it on this worker may have pointed MLflow elsewhere."""
    if "served" in request.fixturenames:
        configure_mlflow(request.getfixturevalue("served").settings)


@dataclass
class ClipServed:
    folder: Path  # the clip-style model folder (served by its path)
    settings: Settings  # served's, serving that folder from a state folder of its own
    catalogue: Path  # the challenge folder indexed (the six-code products and their photos)

    def env(self) -> dict[str, str]:
        """The settings a `prodclass serve` process of this model needs besides server_env's."""
        return {
            "PRODCLASS_STATE_DIR": str(self.settings.state_dir),
            "PRODCLASS_DATABASE_URL": self.settings.db_url,
            "PRODCLASS_MLFLOW_TRACKING_URI": self.settings.tracking_uri,
            "PRODCLASS_MODEL_URI": self.settings.model_uri,
        }


@pytest.fixture(scope="session")
def clip_served(served: Served, six_codes_prepared: Path, tmp_path_factory) -> ClipServed:
    """A tiny clip-style model trained on the six-code products and the catalogue index of
    those products; its own state folder (index, model cache), the served users and registry."""
    root = tmp_path_factory.mktemp("clip-style")
    train, val = (load_prepared(six_codes_prepared, s) for s in ("train", "val"))
    model = create("clip-style", CLIP_TINY)
    model.fit(train, val)
    folder = model.save(root / "model")
    settings = served.settings.model_copy(
        update={
            "state_dir": root / "state",
            "mlflow_tracking_uri": served.settings.tracking_uri,
            "database_url": served.settings.db_url,
            "model_uri": str(folder),
            "model_poll_seconds": 0.0,
            "monitoring_refresh_seconds": 0.0,
        }
    )
    catalogue = Path(json.loads((six_codes_prepared / "meta.json").read_text())["data_dir"])
    predictor = Predictor.load(str(folder))
    index = CatalogueIndex.build(predictor, validate(catalogue).products)
    index.save(index_folder(settings.state_dir, index.model_key))
    return ClipServed(folder, settings, catalogue)


PRODCLASS = [str(Path(sys.executable).with_name("prodclass"))]  # the installed command


def server_env(served: Served, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRODCLASS_")}
    env |= {
        "PRODCLASS_STATE_DIR": str(served.state),
        "PRODCLASS_DATA_DIR": os.environ.get("PRODCLASS_DATA_DIR", str(served.settings.data_dir)),
        "PRODCLASS_JWT_SECRET": SERVER_JWT_SECRET,
        "PRODCLASS_LOG_LEVEL": "WARNING",
        "NO_PROXY": "127.0.0.1,localhost",
        # load tests are one user: the per-user rate limit is tested in test_api.py
        "PRODCLASS_API_RATE_LIMIT_PER_MINUTE": "1000000",
        "PRODCLASS_API_RATE_LIMIT_BURST": "100000",
    }
    return env | overrides


@dataclass
class ServerProcess:
    process: subprocess.Popen
    url: str
    log: Path


@contextmanager
def server_processes(
    served: Served, folder: Path, until: str = "/ready"
) -> Iterator[Callable[..., ServerProcess]]:
    """Start `prodclass serve` processes with setting overrides; each call returns once
    ``until`` answers 200 (``/ready``: model loaded; ``/health``: up, ready or not). All are
    stopped with SIGTERM (killed after 20 s) at the end of the block."""
    started: list[ServerProcess] = []

    def start(**overrides: str) -> ServerProcess:
        port = free_port()
        log = folder / f"serve-{port}.log"
        process = start_process(
            [*PRODCLASS, "serve", "--host", "127.0.0.1", "--port", str(port)],
            log,
            env=server_env(served, **overrides),
        )
        handle = ServerProcess(process, f"http://127.0.0.1:{port}", log)
        started.append(handle)  # before waiting: a server that never comes up is stopped too
        up = lambda: httpx.get(f"{handle.url}{until}", timeout=2).status_code == 200  # noqa: E731
        wait_until_up(process, log, up, "prodclass serve")
        return handle

    yield start
    for handle in started:
        stop_process(handle.process)


@contextmanager
def server_launcher(served: Served, folder: Path) -> Iterator[Callable[..., str]]:
    """Like ``server_processes``, each call giving the ready server's base URL."""
    with server_processes(served, folder) as start:
        yield lambda **overrides: start(**overrides).url


@pytest.fixture
def start_server(served: Served, tmp_path: Path) -> Iterator[Callable[..., str]]:
    with server_launcher(served, tmp_path) as start:
        yield start


@pytest.fixture(scope="module")
def api_url(served: Served, tmp_path_factory) -> Iterator[str]:
    """One real API server for a test module."""
    with server_launcher(served, tmp_path_factory.mktemp("api")) as start:
        yield start()


def _register_corrupt_copy(model_dir: Path, settings: Settings, prepared: Path) -> str:
    from prodclass.data.prepare import load_prepared
    from prodclass.models.registry import load_model_dir

    corrupt = model_dir.parent / "corrupt"
    shutil.copytree(model_dir, corrupt)
    for weights in corrupt.glob("*.joblib"):
        weights.write_bytes(b"not a pickle")
    classifier = load_model_dir(model_dir)  # the good one answers the input example
    with mlflow.start_run(run_name="corrupt-copy"):
        uri = log_model(classifier, corrupt, input_example(load_prepared(prepared, "train")))
    return register(uri, settings.registered_model_name, {}, {})


def wait_ready(client: TestClient, timeout: float = 120.0) -> None:
    wait_for(lambda: client.get("/ready").status_code == 200, "the API to be ready", timeout)


def wait_serving(client, headers: dict, version: str, timeout: float = 120.0) -> dict:
    """Wait for the last load to end; return GET /models/current (``client``: a TestClient or
    an httpx.Client with the server's base URL)."""

    def ended() -> dict | None:
        current = client.get("/models/current", headers=headers).json()
        return current if current["last_load"]["state"] != "loading" else None

    return wait_for(ended, f"the load of version {version} to end", timeout)


@pytest.fixture(scope="module")
def client(served: Served) -> Iterator[TestClient]:
    with TestClient(create_app(served.settings)) as test_client:
        wait_ready(test_client)
        yield test_client


def login(client: TestClient, role: str) -> dict[str, str]:
    answer = client.post("/token", data={"username": role, "password": PASSWORDS[role]})
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


@pytest.fixture(scope="module")
def auth(client: TestClient) -> dict[str, dict[str, str]]:
    return {role: login(client, role) for role in PASSWORDS}


@dataclass
class SamplePhotos:
    both: list[tuple[dict, bytes]]  # (fields, photo bytes) of real products with text and photo


@pytest.fixture(scope="session")
def sample_products(sample: Path) -> SamplePhotos:
    """Real sample products (their text fields and photo bytes)."""
    layout = ChallengeLayout(sample)
    rows = read_features(layout.x_train)
    both = []
    for row_id, row in rows.iterrows():
        path = layout.image_path(row["imageid"], row["productid"])
        if row["designation"] and path.is_file():
            fields = {
                "designation": row["designation"],
                "description": row["description"],
                "product_id": row["productid"],
                "imageid": row["imageid"],
                "product_identifier": str(row_id),
            }
            both.append((fields, path.read_bytes()))
        if len(both) == 40:
            break
    return SamplePhotos(both)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item (fixtures look at ``rep_call`` to save
    evidence, e.g. a browser screenshot, when the test failed)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
