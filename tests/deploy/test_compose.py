"""docker-compose.yml validated by docker-compose itself (no engine runs here): every service,
a healthcheck on each long-running one, settings from .env, and no start without secrets."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import PROJECT_ROOT

COMPOSE = shutil.which("docker-compose")
pytestmark = pytest.mark.skipif(
    COMPOSE is None, reason="needs docker-compose (Debian package; make system-deps)"
)
SECRETS = {
    "POSTGRES_PASSWORD": "pg-test",
    "MINIO_ROOT_USER": "minio-test",
    "MINIO_ROOT_PASSWORD": "minio-test-secret",
    "GRAFANA_ADMIN_PASSWORD": "grafana-test",
}


def _config(tmp_path, secrets: dict[str, str]) -> subprocess.CompletedProcess:
    shutil.copy(PROJECT_ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    shutil.copy(PROJECT_ROOT / ".env.example", tmp_path / ".env")  # what a user starts from
    env = {k: v for k, v in os.environ.items() if k not in SECRETS} | secrets
    return subprocess.run(
        [COMPOSE, "config"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_stack_is_valid_and_every_service_has_a_healthcheck(tmp_path):
    done = _config(tmp_path, SECRETS)
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    assert set(services) >= {
        "postgres",
        "minio",
        "mlflow",
        "api",
        "ui",
        "dagster",
        "prometheus",
        "grafana",
    }
    for name, service in services.items():
        if name != "minio-buckets":  # a one-shot job
            assert "healthcheck" in service, name
    api = services["api"]
    assert api["build"]["target"] == "api"
    assert api["environment"]["PRODCLASS_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert api["environment"]["PRODCLASS_LOG_LEVEL"] == "INFO"  # from .env
    assert services["ui"]["environment"]["PRODCLASS_API_URL"] == "http://api:8000"


def test_the_stack_refuses_to_start_without_its_secrets(tmp_path):
    done = _config(tmp_path, {k: v for k, v in SECRETS.items() if k != "POSTGRES_PASSWORD"})
    assert done.returncode != 0 and "set POSTGRES_PASSWORD" in done.stderr


def test_the_dockerfile_has_the_targets_compose_builds_and_runs_as_non_root():
    dockerfile = (PROJECT_ROOT / "deploy/docker/Dockerfile").read_text()
    stages = {
        line.split(" AS ")[1].strip()
        for line in dockerfile.splitlines()
        if line.startswith("FROM ") and " AS " in line
    }
    assert {"build", "runtime", "api", "ui", "pipeline", "azureml"} <= stages
    assert "USER prodclass" in dockerfile and "torch==2.13.0" in dockerfile
    assert dockerfile.count("HEALTHCHECK --") >= 2
