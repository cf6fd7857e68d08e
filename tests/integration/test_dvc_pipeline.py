"""`prodclass pipeline run` end to end in a throwaway git + DVC project.

The project (dvc.yaml, params.yaml, .dvc/config, src/) is copied into a temporary folder, the
pipeline runs there on the real sample as a subprocess, and the DVC outputs go to the default
local remote and to an S3-compatible remote served by a real ``moto_server`` on loopback.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import sqlite3
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from tests.integration.projects import VENV_BIN, make_project
from tests.integration.projects import dvc as _dvc
from tests.integration.projects import pipeline_run as _pipeline_run
from tests.servers import free_port, start_process, stop_process

pytestmark = pytest.mark.slow

EXPENSIVE = ("prepare", "train", "evaluate", "register")
DUMMY_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class Project:
    root: Path
    env: dict[str, str]
    first: str  # merged stdout/stderr of the first `prodclass pipeline run`
    second: str  # ... and of the second, with nothing changed
    mlflow_after_second: tuple[int, int]  # (runs, registered versions) right after the second


def _mlflow_counts(project: Path) -> tuple[int, int]:
    """(top-level runs, registered model versions) in the embedded MLflow store; the child
    run of each cross-validation fold is not counted."""
    with sqlite3.connect(project / "state" / "mlflow.db") as db:
        runs = db.execute(
            "SELECT COUNT(*) FROM runs WHERE run_uuid NOT IN "
            "(SELECT run_uuid FROM tags WHERE key = 'mlflow.parentRunId')"
        ).fetchone()[0]
        versions = db.execute("SELECT COUNT(*) FROM model_versions").fetchone()[0]
    return runs, versions


def _digest(path: Path, algorithm: str = "sha256") -> str:
    return hashlib.new(algorithm, path.read_bytes()).hexdigest()


# how DVC names a stage in its output: bare (dvc.yaml), or after its file (models/dvc.yaml:train)
STAGE = r"(?:[\w./-]+:)?([\w-]+)"


def _skipped(output: str) -> set[str]:
    return set(re.findall(rf"Stage '{STAGE}' didn't change, skipping", output))


def _ran(output: str) -> set[str]:
    return set(re.findall(rf"Running stage '{STAGE}'", output))


@pytest.fixture(scope="module")
def project(six_codes_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A git + DVC copy of the project after two `prodclass pipeline run` on real products
    (the six-code rows: DVC's mechanics, not the model, are under test)."""
    root = tmp_path_factory.mktemp("dvc-pipeline") / "project"
    env = make_project(root, six_codes_data)
    first = _pipeline_run(root, env)
    second = _pipeline_run(root, env)
    return Project(root, env, first, second, _mlflow_counts(root))


def test_first_run_builds_everything_and_pushes_to_the_local_remote(project: Project):
    root, out = project.root, project.first
    assert _ran(out) >= {"ingest", "validate", *EXPENSIVE}, out
    registration = json.loads((root / "reports/registration.json").read_text())
    assert registration["run_id"] and registration["version"] == "1"
    for text in (
        "prodclass pipeline done",
        f"MLflow run:        {registration['run_id']}",
        "model version:     models:/prodclass/1",
        "reports/evaluation.json",
    ):
        assert text in out, out

    report = json.loads((root / "reports/evaluation.json").read_text())
    assert {"n", "accuracy", "weighted_f1", "macro_f1", "per_class", "model_uri"} <= set(report)
    assert report["n"] > 0 and 0 < report["weighted_f1"] <= 1 and report["per_class"]

    with (root / "data/prepared/products.csv").open(encoding="utf-8", newline="") as handle:
        splits = {row["split"] for row in csv.DictReader(handle)}
    assert splits == {"train", "val", "test"}

    remote = root / "state" / "dvc-remote"
    pushed = [p for p in remote.rglob("*") if p.is_file()]
    assert pushed, "dvc push left the local remote empty"
    md5 = _digest(root / "data/prepared/products.csv", "md5")
    assert (remote / "files" / "md5" / md5[:2] / md5[2:]).is_file()


def test_second_run_reuses_every_expensive_stage(project: Project):
    out = project.second
    assert _skipped(out) >= set(EXPENSIVE), out
    assert not _ran(out) & set(EXPENSIVE), out
    assert project.mlflow_after_second == (1, 1)
    first_run_id = re.search(r"MLflow run:\s+(\w+)", project.first).group(1)
    assert f"MLflow run:        {first_run_id}" in out


def test_changing_a_training_param_retrains_without_repreparing(project: Project):
    root, env = project.root, project.env
    params_file = root / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["families"]["tfidf-linear"]["C"] = params["families"]["tfidf-linear"]["C"] / 2
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    runs_before, versions_before = _mlflow_counts(root)

    out = _pipeline_run(root, env)
    assert "prepare" in _skipped(out), out
    assert _ran(out) >= {"train", "evaluate", "register"}, out
    assert _mlflow_counts(root) == (runs_before + 1, versions_before + 1)
    registration = json.loads((root / "reports/registration.json").read_text())
    assert registration["version"] == str(versions_before + 1)


@pytest.fixture(scope="module")
def s3_endpoint(project: Project):
    """A real moto S3 server on loopback; yields its endpoint URL."""
    port = free_port()
    log_path = project.root.parent / "moto.log"
    server = start_process(
        [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        log_path,
        env=project.env,
    )
    url = f"http://127.0.0.1:{port}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        deadline = time.monotonic() + 30
        while True:
            if server.poll() is not None:
                pytest.fail(f"moto_server exited {server.returncode}:\n{log_path.read_text()}")
            try:
                opener.open(url, timeout=1).close()
                break
            except urllib.error.HTTPError:
                break  # it answered
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not answer on {url}:\n{log_path.read_text()}")
                time.sleep(0.2)
        yield url
    finally:
        stop_process(server, timeout=10)


def test_s3_remote_push_then_pull_restores_outputs(project: Project, s3_endpoint: str):
    import boto3

    root, env = project.root, project.env
    bucket, prefix = "prodclass-dvc", "prodclass"
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name=DUMMY_AWS["AWS_DEFAULT_REGION"],
        aws_access_key_id=DUMMY_AWS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=DUMMY_AWS["AWS_SECRET_ACCESS_KEY"],
    )
    s3.create_bucket(Bucket=bucket)
    _dvc(root, env, "remote", "add", "s3remote", f"s3://{bucket}/{prefix}")
    _dvc(root, env, "remote", "modify", "s3remote", "endpointurl", s3_endpoint)

    products = root / "data/prepared/products.csv"
    sha_before, md5 = _digest(products), _digest(products, "md5")
    _dvc(root, env, "push", "-r", "s3remote")
    keys = {
        obj["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for obj in page.get("Contents", [])
    }
    assert f"{prefix}/files/md5/{md5[:2]}/{md5[2:]}" in keys, sorted(keys)
    assert all(key.startswith(f"{prefix}/files/md5/") for key in keys), sorted(keys)

    for path in (".dvc/cache", "data/prepared", "models/candidate"):
        shutil.rmtree(root / path)
    _dvc(root, env, "pull", "-r", "s3remote")
    assert _digest(products) == sha_before
    assert (root / "models/candidate").is_dir() and any((root / "models/candidate").iterdir())
