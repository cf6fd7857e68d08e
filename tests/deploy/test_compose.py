"""docker-compose.yml validated by docker-compose itself (no engine runs here): every service,
a healthcheck on each long-running one, settings from .env, and no start without secrets."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from prodclass.db.encryption import cipher_from_settings
from prodclass.serving.security import check_production_secrets
from prodclass.settings import Settings
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
    "PRODCLASS_ALERT_WEBHOOK_TOKEN": "alert-webhook-test-token",
    "PRODCLASS_JWT_SECRET": "compose-test-jwt-secret-0123456789abcdef",
    "PRODCLASS_ENCRYPTION_KEYS": "k1:" + base64.b64encode(bytes(range(32))).decode(),
}
# the services that run prodclass (built from deploy/docker/Dockerfile)
OURS = ("mlflow", "api", "ui", "dagster", "dagster-ui")


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
        "redis",
        "minio",
        "mlflow",
        "api",
        "ui",
        "dagster",
        "dagster-ui",
        "prometheus",
        "alertmanager",
        "grafana",
    }
    for name, service in services.items():
        if name != "minio-buckets":  # a one-shot job
            assert "healthcheck" in service, name
    api = services["api"]
    assert api["build"]["target"] == "api"
    assert api["environment"]["PRODCLASS_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert api["environment"]["PRODCLASS_LOG_LEVEL"] == "INFO"  # from .env
    assert api["environment"]["PRODCLASS_REDIS_URL"] == "redis://redis:6379/0"
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["ui"]["environment"]["PRODCLASS_API_URL"] == "http://api:8000"


def test_the_api_and_the_batch_jobs_share_the_photo_bucket_minio_holds(tmp_path):
    """The api writes the photos clients send to a MinIO bucket that exists before it starts;
    the drift check and the feedback export (dagster) read the same one."""
    done = _config(tmp_path, SECRETS)
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    for name in ("api", "dagster"):
        env = services[name]["environment"]
        assert env["PRODCLASS_PHOTO_STORE_URL"] == "s3://photos/uploads", name
        assert env["PRODCLASS_S3_ENDPOINT_URL"] == "http://minio:9000", name
        assert env["AWS_ACCESS_KEY_ID"] == SECRETS["MINIO_ROOT_USER"], name
    entrypoint = services["minio-buckets"]["entrypoint"]
    creates = entrypoint if isinstance(entrypoint, str) else " ".join(entrypoint)
    assert re.search(r"mc mb [^;&|]*local/photos\b", creates), creates
    needs = services["api"]["depends_on"]["minio-buckets"]
    assert needs["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_the_stack_refuses_to_start_without_any_of_its_secrets(tmp_path, missing):
    done = _config(tmp_path, {k: v for k, v in SECRETS.items() if k != missing})
    assert done.returncode != 0 and f"set {missing}" in done.stderr


def test_prodclass_runs_in_production_mode_with_the_keys_every_replica_shares(
    tmp_path, monkeypatch
):
    """Every prodclass container runs production mode whatever .env says (.env.example's
    development included); the api gets the JWT secret and encryption keys of .env, and the
    environment it renders is one the API accepts in production (no key of its own)."""
    done = _config(tmp_path, SECRETS)
    assert done.returncode == 0, done.stderr
    assert "PRODCLASS_ENVIRONMENT=development" in (tmp_path / ".env").read_text()
    services = yaml.safe_load(done.stdout)["services"]
    for name in OURS:
        assert services[name]["environment"]["PRODCLASS_ENVIRONMENT"] == "production", name
    api = services["api"]["environment"]
    for name in ("PRODCLASS_JWT_SECRET", "PRODCLASS_ENCRYPTION_KEYS"):
        assert api[name] == SECRETS[name], name

    for name in [k for k in os.environ if k.startswith("PRODCLASS_")]:
        monkeypatch.delenv(name)
    for name, value in api.items():
        monkeypatch.setenv(name, str(value))
    settings = Settings(_env_file=None)
    assert settings.environment == "production" and settings.db_url.startswith("postgresql")
    check_production_secrets(settings)  # raises on a weak secret or missing keys
    assert cipher_from_settings(settings).current_id == "k1"  # the keys of .env


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


# How each service's listening address shows in the rendered config: the bind-host setting
# of our own images, the command line of MLflow; the other images listen on every interface
# (their documented default), on these ports.
LISTEN = {
    "api": ("env", "PRODCLASS_API_HOST", "PRODCLASS_API_PORT"),
    "ui": ("env", "PRODCLASS_UI_HOST", "PRODCLASS_UI_PORT"),
    "dagster-ui": ("env", "PRODCLASS_DAGSTER_UI_HOST", "PRODCLASS_DAGSTER_UI_PORT"),
    "mlflow": ("command", "--host", "--port"),
}
IMAGE_PORTS = {
    "postgres": {5432},
    "redis": {6379},
    "minio": {9000, 9001},
    "prometheus": {9090},
    "alertmanager": {9093},
    "grafana": {3000},
}
LOOPBACK = re.compile(r"^(127\.|localhost$|::1$|\[::1\]$)")


def listening(name: str, service: dict) -> tuple[str, set[int]]:
    """(bind host, ports) a service listens on inside its container."""
    if name in IMAGE_PORTS:
        return "0.0.0.0", IMAGE_PORTS[name]
    kind, host_key, port_key = LISTEN[name]
    if kind == "env":
        env = service.get("environment", {})
        return env.get(host_key, "127.0.0.1"), {int(env.get(port_key, 0))}  # the settings' default
    words = " ".join(service["command"]).split() if isinstance(service["command"], list) else (
        service["command"].split()
    )  # fmt: skip
    return words[words.index(host_key) + 1], {int(words[words.index(port_key) + 1])}


def test_every_service_others_call_listens_where_they_call_it(tmp_path):
    """Rendered from the .env users start from: each host:port a service names for another
    (URLs, database addresses, the web app's API URL, healthchecks) is a port that service
    listens on beyond loopback, and each published port is one its service listens on."""
    done = _config(tmp_path, SECRETS)
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    called: set[tuple[str, int]] = set()
    for service in services.values():
        text = json.dumps({k: service.get(k) for k in ("environment", "command", "entrypoint")})
        called |= {(host, int(port)) for host, port in CALL.findall(text) if host in services}
    assert {
        ("api", 8000),
        ("mlflow", 5000),
        ("postgres", 5432),
        ("minio", 9000),
        ("redis", 6379),
    } <= called
    for name, port in sorted(called):
        host, ports = listening(name, services[name])
        assert not LOOPBACK.match(host), f"{name} listens on {host}: {port} unreachable"
        assert port in ports, f"{name} is called on {port} but listens on {ports}"
    for name, service in services.items():
        for published in service.get("ports", []):
            host, ports = listening(name, service)
            assert not LOOPBACK.match(host), f"{name}: published {published} reaches nothing"
            assert _target(published) in ports, (name, published, ports)


def _target(published: dict | str) -> int:
    """The container port of a published port: long form, or the short form docker-compose
    renders when a host address is given ("127.0.0.1:3070:3000/tcp")."""
    if isinstance(published, dict):
        return int(published["target"])
    return int(published.split("/")[0].rsplit(":", 1)[1])


CALL = re.compile(r"(?:://|@)([a-z][a-z0-9-]*):(\d+)")


def test_healthchecks_call_the_address_other_services_use(tmp_path):
    """A healthcheck on 127.0.0.1 passes while a service listens only inside its container;
    each one calls the service by its name, as the others do."""
    done = _config(tmp_path, SECRETS)
    services = yaml.safe_load(done.stdout)["services"]
    for name, service in services.items():
        if name in ("minio-buckets", "dagster"):  # a one-shot job; a daemon nobody calls
            continue
        test = " ".join(service["healthcheck"]["test"])
        assert not re.search(r"127\.0\.0\.1|localhost", test), (name, test)
        assert re.search(rf"(://|-h ){name}\b", test), (name, test)


def test_api_replicas_and_the_daemon_share_one_dagster_instance_in_postgres(tmp_path):
    """Retraining runs asked of any api container are queued in one Dagster run storage
    (PostgreSQL's `dagster` database) that the daemon empties and every replica reads; the
    Dagster UI shows that same instance."""
    done = _config(tmp_path, SECRETS)
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    api, daemon, ui = services["api"], services["dagster"], services["dagster-ui"]
    home = api["environment"]["PRODCLASS_DAGSTER_HOME"]
    assert daemon["environment"]["DAGSTER_HOME"] == home
    assert ui["environment"]["PRODCLASS_DAGSTER_HOME"] == home
    assert api["environment"]["PRODCLASS_PIPELINE_DIR"] == "/app/work"  # the daemon's work tree
    for service in (api, daemon, ui):
        url = service["environment"]["DAGSTER_PG_URL"]
        assert url == f"postgresql://prodclass:{SECRETS['POSTGRES_PASSWORD']}@postgres:5432/dagster"
        assert f"{home}/dagster.yaml" in _mounts(service)
        assert _mounts(service)[f"{home}/dagster.yaml"].endswith(
            "deploy/dagster/dagster.compose.yaml"
        )
    assert "CREATE DATABASE dagster" in (PROJECT_ROOT / "deploy/postgres/init.sql").read_text()


def _mounts(service: dict) -> dict[str, str]:
    """Target -> source of a service's volumes (short "source:target[:mode]" or long form)."""
    found = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        found[target] = source
    return found


@pytest.mark.parametrize("name", ["dagster.compose.yaml", "dagster.yaml"])
def test_the_dagster_instance_files_pass_dagsters_own_check(name):
    """Dagster's schema of instance configuration accepts them (a misspelt key is refused);
    both keep the runs in PostgreSQL and queue them for the daemon."""
    from dagster._core.instance.config import dagster_instance_config

    config, _ = dagster_instance_config(str(PROJECT_ROOT / "deploy/dagster"), name)
    assert config["storage"]["postgres"]["postgres_url"] == {"env": "DAGSTER_PG_URL"}
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"


def test_the_images_dagster_postgres_is_the_release_of_the_locked_dagster():
    """dagster-postgres pins the exact dagster it was released with: 0.29.N for 1.13.N."""
    dockerfile = (PROJECT_ROOT / "deploy/docker/Dockerfile").read_text()
    (pinned,) = re.findall(r"ARG DAGSTER_POSTGRES_VERSION=(\S+)", dockerfile)
    lock = (PROJECT_ROOT / "requirements.lock").read_text()
    (dagster,) = re.findall(r"^dagster==(\S+)$", lock, re.MULTILINE)
    major, minor, patch = dagster.split(".")
    assert major == "1" and pinned == f"0.{int(minor) + 16}.{patch}", (pinned, dagster)


def test_alerts_reach_the_api_journal_through_alertmanager_with_the_shared_token(tmp_path):
    """Prometheus sends its alerts to the alertmanager service, whose webhook calls the api
    service's receiver with the token file its entrypoint writes from the same setting the
    api checks; the stack refuses to start without that token."""
    done = _config(tmp_path, SECRETS)
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    manager = services["alertmanager"]
    token = SECRETS["PRODCLASS_ALERT_WEBHOOK_TOKEN"]
    assert services["api"]["environment"]["PRODCLASS_ALERT_WEBHOOK_TOKEN"] == token
    assert manager["environment"]["ALERT_WEBHOOK_TOKEN"] == token
    config_path = "/etc/alertmanager/alertmanager.yml"
    assert _mounts(manager)[config_path].endswith("deploy/alertmanager/alertmanager.yml")
    start = " ".join(manager["entrypoint"])
    assert f"--config.file={config_path}" in start

    config = yaml.safe_load((PROJECT_ROOT / "deploy/alertmanager/alertmanager.yml").read_text())
    (webhook,) = next(
        r["webhook_configs"]
        for r in config["receivers"]
        if r["name"] == config["route"]["receiver"]
    )
    assert webhook["url"] == "http://api:8000/monitoring/alerts"
    assert webhook["send_resolved"] is True
    token_file = webhook["http_config"]["authorization"]["credentials_file"]
    assert f"> {token_file} " in start  # written where the config reads it
    assert token_file.startswith("/alertmanager/")  # the data volume: writable, not the config
    assert _mounts(manager)["/alertmanager"] == "alertmanager-data"

    prometheus = yaml.safe_load((PROJECT_ROOT / "deploy/prometheus/prometheus.yml").read_text())
    (targets,) = [
        c["targets"] for m in prometheus["alerting"]["alertmanagers"] for c in m["static_configs"]
    ]
    assert targets == ["alertmanager:9093"] and 9093 in IMAGE_PORTS["alertmanager"]

    missing = _config(tmp_path, {k: v for k, v in SECRETS.items() if "ALERT" not in k})
    assert missing.returncode != 0 and "set PRODCLASS_ALERT_WEBHOOK_TOKEN" in missing.stderr
