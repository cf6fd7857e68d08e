"""The Helm chart, linted and rendered by helm itself (`make test` fetches it), every rendered
object validated against the Kubernetes JSON schemas of the oldest and newest supported API
versions, and what the deployment relies on checked: probes, autoscaling, secrets, migrations."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from prodclass.db.encryption import cipher_from_settings
from prodclass.serving.security import InsecureConfigurationError, check_production_secrets
from prodclass.settings import Settings
from tests.conftest import PROJECT_ROOT

CHART = PROJECT_ROOT / "deploy/helm/prodclass"
ADAPTER_VALUES = PROJECT_ROOT / "deploy/prometheus/adapter-values.yaml"
HELM = shutil.which("helm") or str(Path(sys.executable).parent / "helm")
pytestmark = pytest.mark.skipif(
    not Path(HELM).is_file(), reason="needs helm (`make .venv/bin/helm` fetches it)"
)
KUBERNETES_VERSIONS = ("1.25", "1.35")  # the chart's kubeVersion floor, and recent
# what a user must give: the token-signing secret, the database, and where MLflow is
REQUIRED = {
    "secrets.values.PRODCLASS_JWT_SECRET": "0123456789abcdef0123456789abcdef",
    "secrets.values.PRODCLASS_ENCRYPTION_KEYS": "k1:" + base64.b64encode(bytes(range(32))).decode(),
    "secrets.values.PRODCLASS_DATABASE_URL": "postgresql://prodclass:pw@db:5432/prodclass",
    "secrets.values.DAGSTER_PG_URL": "postgresql://prodclass:pw@db:5432/dagster",
    "settings.PRODCLASS_MLFLOW_TRACKING_URI": "http://mlflow.tracking:5000",
}


def _helm(*args: str, values: dict[str, str]) -> subprocess.CompletedProcess:
    sets = []  # strings stay strings (a hex secret must not become a number); booleans are booleans
    for key, value in values.items():
        flag = "--set" if value in ("true", "false") else "--set-string"
        sets += [flag, f"{key}={value}"]
    return subprocess.run(
        [HELM, *args, str(CHART), *sets], capture_output=True, text=True, timeout=120
    )


def render(**values: str) -> dict[tuple[str, str], dict]:
    """`helm template` with the required values plus ``values``; objects by (kind, name)."""
    done = _helm("template", "shop", values=REQUIRED | values)
    assert done.returncode == 0, done.stderr
    docs = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}


def notes(**values: str) -> str:
    """The install notes `helm install` prints, with the required values plus ``values``."""
    done = _helm("install", "shop", "--dry-run=client", values=REQUIRED | values)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("NOTES:", 1)[1]


def _container(objects: dict, kind: str, name: str) -> dict:
    (container,) = objects[(kind, name)]["spec"]["template"]["spec"]["containers"]
    return container


def test_the_chart_lints_strictly():
    done = _helm("lint", "--strict", values=REQUIRED)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize(
    "values",
    [
        {},
        {
            "mlflow.enabled": "true",
            "secrets.values.MLFLOW_BACKEND_STORE_URI": "postgresql+psycopg://m@db/mlflow",
            "ingress.enabled": "true",
            "ingress.api.host": "api.shop.test",
            "ingress.ui.host": "app.shop.test",
            "api.autoscaling.enabled": "false",
        },
        {"api.autoscaling.podsMetric.enabled": "true"},
        {
            "alertmanager.enabled": "true",
            "secrets.values.PRODCLASS_ALERT_WEBHOOK_TOKEN": "alert-token-0123456789abcdef",
        },
    ],
    ids=["defaults", "mlflow-ingress-fixed-replicas", "pods-metric", "alertmanager"],
)
def test_every_rendered_object_matches_the_kubernetes_schemas(values):
    objects = render(**values)
    assert len(objects) >= 9
    for obj in objects.values():
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


def test_the_schema_check_rejects_a_misspelt_field():
    """The validator is strict: a typo in a probe would be caught, not ignored."""
    deployment = render()[("Deployment", "shop-prodclass-api")]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 5
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_the_api_is_probed_autoscaled_and_reads_settings_and_secrets():
    objects = render()
    api = _container(objects, "Deployment", "shop-prodclass-api")
    assert api["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert api["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert api["resources"]["requests"]["cpu"]  # the HPA's utilisation needs a CPU request
    assert api["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"configMapRef": {"name": "shop-prodclass-settings"}} in api["envFrom"]
    assert {"secretRef": {"name": "shop-prodclass-secrets"}} in api["envFrom"]
    assert "replicas" not in objects[("Deployment", "shop-prodclass-api")]["spec"]  # the HPA's

    hpa = objects[("HorizontalPodAutoscaler", "shop-prodclass-api")]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "shop-prodclass-api"
    (metric,) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"

    secret = objects[("Secret", "shop-prodclass-secrets")]["stringData"]
    assert secret["PRODCLASS_JWT_SECRET"] == REQUIRED["secrets.values.PRODCLASS_JWT_SECRET"]
    settings = objects[("ConfigMap", "shop-prodclass-settings")]["data"]
    assert "PRODCLASS_JWT_SECRET" not in settings
    assert settings["PRODCLASS_MLFLOW_TRACKING_URI"] == "http://mlflow.tracking:5000"

    ui = _container(objects, "Deployment", "shop-prodclass-ui")
    env = {item["name"]: item.get("value") for item in ui["env"]}
    assert env["PRODCLASS_API_URL"] == "http://shop-prodclass-api:8000"
    assert ("Deployment", "shop-prodclass-mlflow") not in objects  # optional, off by default


def adapter_metric_names() -> set[str]:
    """The metric names deploy/prometheus/adapter-values.yaml has prometheus-adapter serve."""
    rules = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
    return {rule["name"]["as"] for rule in rules}


def _hpa_metrics(**values: str) -> list[dict]:
    return render(**values)[("HorizontalPodAutoscaler", "shop-prodclass-api")]["spec"]["metrics"]


CPU_70 = {
    "type": "Resource",
    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
}


def test_the_hpa_scales_on_cpu_alone_unless_a_pods_metric_is_asked():
    assert _hpa_metrics() == [CPU_70]
    assert _hpa_metrics(**{"api.autoscaling.podsMetric.enabled": "false"}) == [CPU_70]

    metrics = _hpa_metrics(**{"api.autoscaling.podsMetric.enabled": "true"})
    assert metrics[0] == CPU_70  # CPU still counts: the HPA follows whichever asks for more
    assert metrics[1] == {
        "type": "Pods",
        "pods": {
            "metric": {"name": "prodclass_prediction_queue_depth"},
            "target": {"type": "AverageValue", "averageValue": "4"},
        },
    }
    custom_metrics = "/apis/custom.metrics.k8s.io/v1beta1/namespaces/default/pods/*/"
    assert custom_metrics not in notes()
    said = notes(**{"api.autoscaling.podsMetric.enabled": "true"})
    assert f"{custom_metrics}prodclass_prediction_queue_depth" in said  # how to check the adapter


@pytest.mark.parametrize("name", sorted(adapter_metric_names()))
def test_the_hpa_reads_any_metric_the_adapter_serves_with_the_target_given(name):
    hpa = render(
        **{
            "api.autoscaling.podsMetric.enabled": "true",
            "api.autoscaling.podsMetric.name": name,
            "api.autoscaling.podsMetric.averageValue": "500m",
        }
    )[("HorizontalPodAutoscaler", "shop-prodclass-api")]
    (pods,) = [metric for metric in hpa["spec"]["metrics"] if metric["type"] == "Pods"]
    assert pods["pods"]["metric"]["name"] == name
    assert pods["pods"]["target"] == {"type": "AverageValue", "averageValue": "500m"}
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(hpa, version, strict=True)


def test_the_default_pods_metric_is_one_the_adapter_serves():
    """The chart's default name is served by the shipped adapter rules (whose series the API
    exports: tests/deploy/test_monitoring_config.py), so enabling it needs no other value."""
    default = yaml.safe_load((CHART / "values.yaml").read_text())["api"]["autoscaling"]
    assert default["podsMetric"]["name"] in adapter_metric_names()


def test_prometheus_finds_the_api_pods_by_their_annotations_on_the_api_port():
    def annotations(**values: str) -> dict[str, str]:
        deployment = render(**values)[("Deployment", "shop-prodclass-api")]
        return deployment["spec"]["template"]["metadata"]["annotations"]

    scrape = annotations()
    assert scrape["prometheus.io/scrape"] == "true"
    assert scrape["prometheus.io/path"] == "/metrics"
    assert scrape["prometheus.io/port"] == "8000"
    assert annotations(**{"api.port": "9000"})["prometheus.io/port"] == "9000"
    other = annotations(**{"api.scrapeAnnotations": "false", "api.podAnnotations.team": "shop"})
    assert not [key for key in other if key.startswith("prometheus.io/")]
    assert other["team"] == "shop"


def test_every_setting_the_chart_sets_is_a_real_setting():
    """A misspelt PRODCLASS_ name would be silently ignored by the application."""
    known = {f"PRODCLASS_{name.upper()}" for name in Settings.model_fields}
    objects = render(
        **{
            "mlflow.enabled": "true",
            "secrets.values.MLFLOW_BACKEND_STORE_URI": "x",
            "redis.url": "redis://cache:6379/0",
        }
    )
    names = set(objects[("ConfigMap", "shop-prodclass-settings")]["data"])
    names |= set(objects[("Secret", "shop-prodclass-secrets")]["stringData"])
    for kind, name in objects:
        if kind == "Deployment":
            container = _container(objects, kind, name)
            names |= {item["name"] for item in container.get("env", [])}
    ours = {name for name in names if name.startswith("PRODCLASS_")}
    assert ours, "no settings rendered"
    assert ours <= known, ours - known


def test_the_api_pods_share_the_redis_given_by_value_or_secret():
    objects = render(**{"redis.url": "redis://cache.shop:6379/0"})
    settings = objects[("ConfigMap", "shop-prodclass-settings")]["data"]
    assert settings["PRODCLASS_REDIS_URL"] == "redis://cache.shop:6379/0"
    assert settings["PRODCLASS_REDIS_PREFIX"] == "prodclass"

    with_password = "redis://:pw@cache.shop:6379/0"
    objects = render(**{"secrets.values.PRODCLASS_REDIS_URL": with_password})
    assert objects[("Secret", "shop-prodclass-secrets")]["stringData"]["PRODCLASS_REDIS_URL"] == (
        with_password
    )
    assert "PRODCLASS_REDIS_URL" not in objects[("ConfigMap", "shop-prodclass-settings")]["data"]

    unset = render()
    assert "PRODCLASS_REDIS_URL" not in unset[("ConfigMap", "shop-prodclass-settings")]["data"]
    assert "PRODCLASS_REDIS_URL" not in unset[("Secret", "shop-prodclass-secrets")]["stringData"]


def test_the_api_pods_share_the_photo_bucket_given_by_value():
    bucket = {
        "settings.PRODCLASS_PHOTO_STORE_URL": "s3://shop-photos/uploads",
        "settings.PRODCLASS_S3_ENDPOINT_URL": "http://minio.storage:9000",
    }
    settings = render(**bucket)[("ConfigMap", "shop-prodclass-settings")]["data"]
    assert settings["PRODCLASS_PHOTO_STORE_URL"] == "s3://shop-photos/uploads"
    assert settings["PRODCLASS_S3_ENDPOINT_URL"] == "http://minio.storage:9000"
    unset = render()[("ConfigMap", "shop-prodclass-settings")]["data"]
    assert "PRODCLASS_PHOTO_STORE_URL" not in unset  # the pod's own folder: the notes say so
    assert "PRODCLASS_S3_ENDPOINT_URL" not in unset

    assert "No photo bucket" in notes()
    assert "No photo bucket" not in notes(**bucket)
    one_pod = {"api.autoscaling.enabled": "false", "api.replicaCount": "1"}
    assert "No photo bucket" not in notes(**one_pod)


def test_the_caches_caps_fit_the_api_pods_state_volume():
    """The feature and OCR caches gain an entry with every new photo; their caps, with a GiB
    left for the model files, must fit the state emptyDir, or the kubelet evicts the pod."""
    objects = render()
    settings = objects[("ConfigMap", "shop-prodclass-settings")]["data"]
    caps_mb = sum(
        int(settings[name])
        for name in ("PRODCLASS_FEATURE_CACHE_MAX_MB", "PRODCLASS_OCR_CACHE_MAX_MB")
    )
    pod = objects[("Deployment", "shop-prodclass-api")]["spec"]["template"]["spec"]
    (state,) = [volume for volume in pod["volumes"] if volume["name"] == "state"]
    limit = state["emptyDir"]["sizeLimit"]
    assert limit.endswith("Gi"), limit
    assert 0 < caps_mb <= (int(limit[:-2]) - 1) * 1024, (caps_mb, limit)


def test_the_api_pods_share_one_dagster_instance_that_queues_retraining_runs():
    """Every API pod reads the same dagster.yaml in PRODCLASS_DAGSTER_HOME: PostgreSQL run
    storage from the Secret, runs queued for the Dagster daemon (none launched by a pod)."""
    objects = render()
    settings = objects[("ConfigMap", "shop-prodclass-settings")]["data"]
    home = settings["PRODCLASS_DAGSTER_HOME"]
    assert home == f"{settings['PRODCLASS_STATE_DIR']}/dagster"
    assert settings["PRODCLASS_PIPELINE_DIR"] == "/app/work"  # the pipeline image's work tree
    instance = yaml.safe_load(
        objects[("ConfigMap", "shop-prodclass-dagster")]["data"]["dagster.yaml"]
    )
    assert instance["storage"]["postgres"]["postgres_url"] == {"env": "DAGSTER_PG_URL"}
    assert instance["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert "run_launcher" not in instance  # the daemon's to choose (deploy/dagster/dagster.yaml)
    secret = objects[("Secret", "shop-prodclass-secrets")]["stringData"]
    assert secret["DAGSTER_PG_URL"] == REQUIRED["secrets.values.DAGSTER_PG_URL"]

    pod = objects[("Deployment", "shop-prodclass-api")]["spec"]["template"]["spec"]
    (api,) = pod["containers"]
    (mount,) = [m for m in api["volumeMounts"] if m["name"] == "dagster"]
    assert mount["mountPath"] == f"{home}/dagster.yaml" and mount["subPath"] == "dagster.yaml"
    (volume,) = [v for v in pod["volumes"] if v["name"] == "dagster"]
    assert volume["configMap"]["name"] == "shop-prodclass-dagster"


def test_the_charts_dagster_yaml_passes_dagsters_own_check(tmp_path):
    """Dagster's schema of instance configuration accepts the rendered file (a misspelt key
    or storage block would be refused); its PostgreSQL storage is dagster-postgres's, which
    the images install."""
    from dagster._core.instance.config import dagster_instance_config

    rendered = render()[("ConfigMap", "shop-prodclass-dagster")]["data"]["dagster.yaml"]
    (tmp_path / "dagster.yaml").write_text(rendered)
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"


def test_migrations_run_as_a_hook_before_upgrades():
    job = render()[("Job", "shop-prodclass-migrations")]
    hooks = job["metadata"]["annotations"]["helm.sh/hook"].split(",")
    assert set(hooks) == {"post-install", "pre-upgrade"}
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["prodclass", "db", "upgrade"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_the_pods_run_in_production_mode_with_the_keys_they_share(monkeypatch):
    """The API pods and the migrations job read production mode from the ConfigMap and the
    encryption keys from the Secret, the same for every pod; what they read is an environment
    the API accepts in production (a real secret, keys given: none generated in a pod)."""
    objects = render(**{"api.autoscaling.enabled": "false", "api.replicaCount": "3"})
    settings = objects[("ConfigMap", "shop-prodclass-settings")]["data"]
    secret = objects[("Secret", "shop-prodclass-secrets")]["stringData"]
    assert settings["PRODCLASS_ENVIRONMENT"] == "production"
    keys = REQUIRED["secrets.values.PRODCLASS_ENCRYPTION_KEYS"]
    assert secret["PRODCLASS_ENCRYPTION_KEYS"] == keys
    assert objects[("Deployment", "shop-prodclass-api")]["spec"]["replicas"] == 3
    for kind, name in (("Deployment", "shop-prodclass-api"), ("Job", "shop-prodclass-migrations")):
        pod = objects[(kind, name)]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert {"configMapRef": {"name": "shop-prodclass-settings"}} in container["envFrom"]
        assert {"secretRef": {"name": "shop-prodclass-secrets"}} in container["envFrom"]

    for name in [k for k in os.environ if k.startswith("PRODCLASS_")]:
        monkeypatch.delenv(name)
    for name, value in (settings | secret).items():
        monkeypatch.setenv(name, value)
    pod_settings = Settings(_env_file=None)
    assert pod_settings.environment == "production"
    check_production_secrets(pod_settings)  # raises on a weak secret or missing keys
    assert cipher_from_settings(pod_settings).current_id == "k1"

    # an existing Secret must hold them too: without them a pod refuses to start, saying so
    monkeypatch.delenv("PRODCLASS_ENCRYPTION_KEYS")
    with pytest.raises(InsecureConfigurationError, match="PRODCLASS_ENCRYPTION_KEYS is required"):
        check_production_secrets(Settings(_env_file=None))


def test_an_existing_secret_replaces_the_charts_own():
    objects = render(**{"secrets.existingSecret": "prodclass-sealed"})
    assert not [key for key in objects if key[0] == "Secret"]
    api = _container(objects, "Deployment", "shop-prodclass-api")
    assert {"secretRef": {"name": "prodclass-sealed"}} in api["envFrom"]


def test_the_optional_mlflow_server_is_what_the_api_is_pointed_at():
    objects = render(**{"mlflow.enabled": "true", "secrets.values.MLFLOW_BACKEND_STORE_URI": "x"})
    assert ("Service", "shop-prodclass-mlflow") in objects
    settings = objects[("ConfigMap", "shop-prodclass-settings")]["data"]
    assert settings["PRODCLASS_MLFLOW_TRACKING_URI"] == "http://shop-prodclass-mlflow:5000"


@pytest.mark.parametrize(
    ("missing", "override", "message"),
    [
        ("secrets.values.PRODCLASS_JWT_SECRET", None, "PRODCLASS_JWT_SECRET is required"),
        ("secrets.values.PRODCLASS_DATABASE_URL", None, "PRODCLASS_DATABASE_URL is required"),
        ("secrets.values.DAGSTER_PG_URL", None, "DAGSTER_PG_URL is required"),
        ("secrets.values.PRODCLASS_ENCRYPTION_KEYS", None, "PRODCLASS_ENCRYPTION_KEYS is required"),
        (
            None,
            {"secrets.values.PRODCLASS_ENCRYPTION_KEYS": "k1:c2hvcnQ="},  # 5 bytes
            "PRODCLASS_ENCRYPTION_KEYS must read id:base64key",
        ),
        (None, {"settings.PRODCLASS_ENVIRONMENT": "development"}, "production mode only"),
        ("settings.PRODCLASS_MLFLOW_TRACKING_URI", None, "PRODCLASS_MLFLOW_TRACKING_URI"),
        (None, {"secrets.values.PRODCLASS_JWT_SECRET": "short"}, "at least 32 characters"),
        (None, {"ingress.enabled": "true"}, "ingress.api.host is required"),
        (
            None,
            {"api.autoscaling.podsMetric.enabled": "true", "api.autoscaling.podsMetric.name": ""},
            "api.autoscaling.podsMetric.name is required",
        ),
        (
            None,
            {"redis.url": "redis://a:6379/0", "secrets.values.PRODCLASS_REDIS_URL": "redis://b"},
            "give the Redis URL once",
        ),
    ],
)
def test_missing_or_weak_values_stop_the_install_with_a_reason(missing, override, message):
    values = {key: value for key, value in REQUIRED.items() if key != missing} | (override or {})
    done = _helm("template", "shop", values=values)
    assert done.returncode != 0
    assert message in done.stderr


def test_the_api_pods_may_forward_to_an_azure_ml_endpoint():
    url = "https://prodclass.westeurope.inference.ml.azure.com/score"
    objects = render(
        **{"settings.PRODCLASS_SCORING_URL": url, "secrets.values.PRODCLASS_SCORING_KEY": "k3y"}
    )
    assert objects[("ConfigMap", "shop-prodclass-settings")]["data"]["PRODCLASS_SCORING_URL"] == url
    assert (
        objects[("Secret", "shop-prodclass-secrets")]["stringData"]["PRODCLASS_SCORING_KEY"]
        == "k3y"
    )
    unset = render()
    assert "PRODCLASS_SCORING_URL" not in unset[("ConfigMap", "shop-prodclass-settings")]["data"]
    assert "PRODCLASS_SCORING_KEY" not in unset[("Secret", "shop-prodclass-secrets")]["stringData"]


ALERTING = {
    "alertmanager.enabled": "true",
    "secrets.values.PRODCLASS_ALERT_WEBHOOK_TOKEN": "alert-token-0123456789abcdef",
}


def test_alertmanager_is_optional_and_needs_the_webhook_token():
    assert not [key for key in render() if "alertmanager" in key[1]]  # off by default
    done = _helm("template", "shop", values=REQUIRED | {"alertmanager.enabled": "true"})
    assert done.returncode != 0
    assert "PRODCLASS_ALERT_WEBHOOK_TOKEN is required with alertmanager.enabled" in done.stderr
    lint = _helm("lint", "--strict", values=REQUIRED | ALERTING)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    target = "targets: [shop-prodclass-alertmanager.default:9093]"
    assert target in notes(**ALERTING) and target not in notes()  # how to point Prometheus


@pytest.mark.skipif(
    shutil.which("amtool") is None,
    reason="needs amtool (Debian `prometheus-alertmanager`; make test-deps)",
)
def test_the_charts_alertmanager_calls_the_api_with_the_secrets_token(tmp_path):
    """The rendered config passes amtool, with receivers and routes added from values: every
    alert goes to the API Service's webhook with the token file mounted from the Secret the
    API reads, and on to the added receivers."""
    extra = tmp_path / "values.yaml"
    extra.write_text(
        yaml.safe_dump(
            {
                "alertmanager": {
                    "secretFiles": ["SLACK_WEBHOOK_URL"],
                    "routes": [{"receiver": "team-slack"}],
                    "receivers": [
                        {
                            "name": "team-slack",
                            "slack_configs": [
                                {"api_url_file": "/etc/alertmanager/secrets/SLACK_WEBHOOK_URL"}
                            ],
                        }
                    ],
                }
            }
        )
    )
    done = _helm("template", "shop", "-f", str(extra), values=REQUIRED | ALERTING)
    assert done.returncode == 0, done.stderr
    objects = {
        (doc["kind"], doc["metadata"]["name"]): doc
        for doc in yaml.safe_load_all(done.stdout)
        if doc
    }
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(
            objects[("Deployment", "shop-prodclass-alertmanager")], version, strict=True
        )
    text = objects[("ConfigMap", "shop-prodclass-alertmanager")]["data"]["alertmanager.yml"]
    config_file = tmp_path / "alertmanager.yml"
    config_file.write_text(text)
    checked = subprocess.run(
        ["amtool", "check-config", str(config_file)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    routed = subprocess.run(
        ["amtool", "config", "routes", "test", f"--config.file={config_file}", "alertname=X"],
        capture_output=True,
        text=True,
    )
    assert routed.stdout.strip() == "prodclass-api,team-slack", routed.stdout + routed.stderr

    config = yaml.safe_load(text)
    (webhook,) = config["receivers"][0]["webhook_configs"]
    service = objects[("Service", "shop-prodclass-api")]["spec"]["ports"][0]["port"]
    assert webhook["url"] == f"http://shop-prodclass-api:{service}/monitoring/alerts"
    token_file = webhook["http_config"]["authorization"]["credentials_file"]

    pod = objects[("Deployment", "shop-prodclass-alertmanager")]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if token_file.startswith(m["mountPath"])]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "shop-prodclass-secrets"  # what the API reads
    files = {item["path"]: item["key"] for item in volume["secret"]["items"]}
    assert files[token_file.rsplit("/", 1)[1]] == "PRODCLASS_ALERT_WEBHOOK_TOKEN"
    assert files["SLACK_WEBHOOK_URL"] == "SLACK_WEBHOOK_URL"
    secret = objects[("Secret", "shop-prodclass-secrets")]["stringData"]
    assert (
        secret["PRODCLASS_ALERT_WEBHOOK_TOKEN"]
        == ALERTING["secrets.values.PRODCLASS_ALERT_WEBHOOK_TOKEN"]
    )
    api = _container(objects, "Deployment", "shop-prodclass-api")
    assert {"secretRef": {"name": "shop-prodclass-secrets"}} in api["envFrom"]
