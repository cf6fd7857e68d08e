"""The monitoring and retraining loop, end to end, on real sample data.

A champion is trained on part of the catalogue. The API serves it; a stream of real products
it never saw comes in (text only: a different input mix), every prediction is logged and a
reviewer gives each its true category. The drift check fires, the Dagster sensor asks for a
retraining, the retraining job trains a challenger on the data plus the reviewed products
(versioned by DVC), compares it with the champion on the same test set, promotes it, and the
running API serves it without a restart. The journal records each step.
"""

from __future__ import annotations

import json
import subprocess

import dagster as dg
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from tests.conftest import copy_subset
from tests.integration.projects import VENV_BIN, make_project, pipeline_run, run
from tests.servers import wait_for

from prodclass.data.layout import ChallengeLayout, read_features, read_labels
from prodclass.db.session import session_scope, upgrade
from prodclass.db.users import create_user
from prodclass.settings import Settings, get_settings

pytestmark = pytest.mark.slow
KNOWN_SHARE = 0.2  # of the sample's products, what the champion is trained on (1,222)
STREAM = 200  # new products posted to the API, then reviewed


@pytest.fixture(scope="module")
def world(sample, tmp_path_factory):
    layout = ChallengeLayout(sample)
    x = read_features(layout.x_train)
    y = read_labels(layout.y_train)["prdtypecode"]
    known = list(x.index[: int(len(x) * KNOWN_SHARE)])
    new = x.iloc[len(known) :]
    new = new[new["designation"] != ""].head(STREAM)
    base = tmp_path_factory.mktemp("loop")
    data = copy_subset(sample, base / "data", row_ids=known)
    root = base / "project"
    env = make_project(
        root,
        data,
        params={
            "promotion": {"min_improvement": 0.0, "max_class_drop": 0.5},
            "monitoring": {"min_samples": 50, "retrain_min_labels": 10_000},
        },
    )
    pipeline_run(root, env)  # the champion, version 1
    return root, env, data, new, y


def test_the_loop_from_drift_to_a_new_champion_served(world, monkeypatch):
    root, env, data, new, labels = world
    for key, value in env.items():  # this process acts in the project like its commands
        if key.startswith(("PRODCLASS_", "DVC_")):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("PRODCLASS_PARAMS_FILE", str(root / "params.yaml"))
    monkeypatch.delenv("PRODCLASS_MLFLOW_TRACKING_URI", raising=False)
    get_settings.cache_clear()
    settings = Settings(
        model_poll_seconds=0.5,
        monitoring_refresh_seconds=0.5,
        jwt_secret="loop-test-key-" + "z" * 32,
        api_rate_limit_burst=100_000,  # one client posts the whole stream at once
    )
    upgrade(settings.db_url)
    with session_scope(settings.db_url) as session:
        create_user(session, "shop", "shop-password-1", "client")
        create_user(session, "rev", "rev-password-1", "reviewer")

    from prodclass.serving.api.app import create_app

    with TestClient(create_app(settings)) as api:
        wait_for(lambda: api.get("/ready").status_code == 200, "the API is ready")
        shop, rev = _login(api, "shop"), _login(api, "rev")
        assert api.get("/models/current", headers=shop).json()["serving"]["version"] == "1"

        # 1. new products arrive (text only), each answered and logged
        answers = []
        for row_id, row in new.iterrows():
            fields = {
                "designation": row["designation"],
                "description": row["description"],
                "product_id": row["productid"],
                "imageid": row["imageid"],
            }
            answer = api.post("/predict", data=fields, headers=shop)
            assert answer.status_code == 200, answer.text
            answers.append((row_id, answer.json()))
        right = sum(a["prdtypecode"] == int(labels[r]) for r, a in answers) / len(answers)

        # 2. a reviewer gives every one its true category
        for row_id, answer in answers:
            verdict = api.post(
                f"/feedback/{answer['prediction_id']}",
                json={"prdtypecode": int(labels[row_id])},
                headers=rev,
            )
            assert verdict.status_code == 201

        # 3. the drift check fires (exit code 3) and the API's gauges show it
        check = subprocess.run(
            [str(VENV_BIN / "prodclass"), "monitor", "drift", "--since", "1h"],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert check.returncode == 3, check.stdout + check.stderr
        drift = json.loads((root / "reports/monitoring/drift.json").read_text())
        assert drift["drift"] and "inputs" in drift["drifted"]
        assert drift["quality"]["n"] == len(answers)
        assert drift["quality"]["accuracy"] == pytest.approx(right, abs=1e-3)
        wait_for(lambda: "prodclass_drift_detected 1.0" in api.get("/metrics").text, "drift gauge")

        # 4. the sensor asks for a retraining, which the retraining job carries out
        from prodclass.pipelines.definitions import retrain_when_needed

        request = retrain_when_needed(dg.build_sensor_context())
        assert isinstance(request, dg.RunRequest), request
        assert "drift detected" in request.tags["prodclass/reason"]
        run([VENV_BIN / "prodclass", "pipeline", "run", "--job", "retraining"], root, env)

        # 5. the challenger learnt from the reviewed products, on the same test set
        prepared = pd.read_csv(root / "data/prepared/products.csv", index_col=0, dtype=str)
        from_feedback = prepared[prepared.index.str.startswith("feedback-")]
        assert len(from_feedback) == len(answers) and set(from_feedback["split"]) == {"train"}
        registration = json.loads((root / "reports/registration.json").read_text())
        assert registration["version"] == "2", registration
        assert registration["promoted"], registration["reason"]
        assert registration["candidate_weighted_f1"] > registration["champion_weighted_f1"]

        # 6. the running API serves the new champion without a restart
        wait_for(
            lambda: api.get("/models/current", headers=shop).json()["serving"]["version"] == "2",
            "the API serves version 2",
        )
        assert (
            api.post("/predict", data={"designation": "Piscine"}, headers=shop).json()["model"][
                "version"
            ]
            == "2"
        )

    journal = subprocess.run(
        [str(VENV_BIN / "prodclass"), "monitor", "journal"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "drift" in journal and "version 2 promoted to champion" in journal


def _login(api: TestClient, user: str) -> dict[str, str]:
    token = api.post("/token", data={"username": user, "password": f"{user}-password-1"})
    return {"Authorization": f"Bearer {token.json()['access_token']}"}
