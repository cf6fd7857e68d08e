"""A served registry for the API tests: real models trained on real sample products.

Version 1 is `tfidf-linear` (text only), version 2 `multimodal-effnet` on EfficientNet-Lite0
(text and photos; the champion, what the API serves first), version 3 a copy of version 1
whose weights file is corrupt (a load must refuse it). Users of each role exist in the
application database.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from fastapi.testclient import TestClient

from prodclass.data.layout import ChallengeLayout, read_features
from prodclass.db.session import session_scope, upgrade
from prodclass.db.users import create_user
from prodclass.registry.model_registry import log_model, promote, register
from prodclass.registry.tracking import configure_mlflow
from prodclass.serving.api.app import create_app
from prodclass.settings import Settings, get_settings
from prodclass.training.evaluate import evaluate_prepared
from prodclass.training.train import input_example, train_model

PASSWORDS = {
    "admin": "admin-secret-1",
    "reviewer": "reviewer-secret-1",
    "client": "client-secret-1",
}
MULTIMODAL_FAST = {
    "variant": "efficientnet-lite0",
    "ocr": False,
    "trainable_blocks": 1,
    "views": ["orig"],
    "epochs": 4,
    "patience": 4,
    "batch_size": 32,
    "stack_folds": 3,
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
        for family, params in (("tfidf-linear", {}), ("multimodal-effnet", MULTIMODAL_FAST)):
            result = train_model(
                six_codes_prepared, family, params, settings, state / family, latency=False
            )
            if family == "multimodal-effnet":  # its run gets a test report (the UI shows it)
                evaluate_prepared(
                    six_codes_prepared, "test", result.model_uri, result.run_id, latency=False
                )
            versions.append(register(result.model_uri, settings.registered_model_name, {}, {}))
        broken = _register_corrupt_copy(state / "tfidf-linear", settings, six_codes_prepared)
        promote(settings.registered_model_name, versions[0])
        promote(settings.registered_model_name, versions[1])
        upgrade(settings.db_url)
        with session_scope(settings.db_url) as session:
            for role, password in PASSWORDS.items():
                create_user(session, role, password, role)
        yield Served(state, settings, versions[0], versions[1], broken)
    get_settings.cache_clear()


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
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/ready").status_code == 200:
            return
        time.sleep(0.2)
    raise AssertionError(f"API not ready: {client.get('/ready').json()}")


def wait_serving(client: TestClient, headers: dict, version: str, timeout: float = 120.0) -> dict:
    """Wait for the last load to end; return GET /models/current."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = client.get("/models/current", headers=headers).json()
        if current["last_load"]["state"] != "loading":
            return current
        time.sleep(0.2)
    raise AssertionError(f"load of version {version} did not end")


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
