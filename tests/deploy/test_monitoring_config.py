"""The shipped Prometheus rules, Alertmanager configuration and Grafana dashboard: checked and
unit-tested by the real tools where they exist (promtool, amtool), and every metric they use is
one the API exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy"
PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")


@pytest.mark.skipif(
    PROMTOOL is None, reason="needs promtool (Debian `prometheus`; make system-deps)"
)
def test_alert_rules_are_valid_and_fire_as_their_unit_tests_say():
    folder = DEPLOY / "prometheus"
    for args in (
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
        ["check", "config", "--syntax-only", "prometheus.yml"],
    ):
        done = subprocess.run([PROMTOOL, *args], cwd=folder, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


# a commented example line of alertmanager.yml: indented, then a key, a list item or deeper text
EXAMPLE_LINE = re.compile(r"^(\s+)# ((?: *(?:- )?[a-z_]+:| {2,}).*)$")


def _amtool(*args: str) -> str:
    done = subprocess.run([AMTOOL, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.skipif(
    AMTOOL is None, reason="needs amtool (Debian `prometheus-alertmanager`; make test-deps)"
)
def test_the_alertmanager_config_and_its_commented_receivers_are_valid(tmp_path):
    """amtool accepts the shipped config, which sends every alert to the API's journal; with
    its commented email and Slack examples uncommented it is still valid, and those receivers
    get alerts besides the journal, not instead of it."""
    shipped = DEPLOY / "alertmanager/alertmanager.yml"
    _amtool("check-config", str(shipped))

    def receivers(config, *labels: str) -> str:
        return _amtool("config", "routes", "test", f"--config.file={config}", *labels).strip()

    assert receivers(shipped, "alertname=ProdclassApiDown", "severity=critical") == "prodclass-api"
    lines = shipped.read_text().splitlines()
    uncommented = [m[1] + m[2] if (m := EXAMPLE_LINE.match(line)) else line for line in lines]
    examples = tmp_path / "alertmanager.yml"
    examples.write_text("\n".join(uncommented) + "\n")
    _amtool("check-config", str(examples))
    assert {r["name"] for r in yaml.safe_load(examples.read_text())["receivers"]} == {
        "prodclass-api",
        "on-call-email",
        "team-slack",
    }
    critical = receivers(examples, "alertname=ProdclassApiDown", "severity=critical")
    assert critical == "prodclass-api,on-call-email,team-slack"
    warning = receivers(examples, "alertname=ProdclassDriftDetected", "severity=warning")
    assert warning == "prodclass-api,team-slack"


def test_rules_and_dashboard_use_only_metrics_the_api_exports():
    from prometheus_client.metrics import MetricWrapperBase

    import prodclass.serving.metrics as exported

    names = {
        family.name
        for value in vars(exported).values()
        if isinstance(value, MetricWrapperBase)
        for family in value.describe()
    }
    texts = (DEPLOY / "prometheus/alerts.yml").read_text() + json.dumps(
        json.loads((DEPLOY / "grafana/dashboards/prodclass.json").read_text())
    )
    used = set(re.findall(r"\b(prodclass_[a-z_]+?)(?:_bucket|_total|_count|_sum)?\b", texts))
    unknown = {u for u in used if not any(n == u or n.startswith(u) for n in names)}
    assert not unknown, f"metrics not exported by the API: {sorted(unknown)}"


def test_the_monitoring_compose_file_mounts_files_that_exist():
    import yaml

    compose = yaml.safe_load((DEPLOY / "docker-compose.monitoring.yml").read_text())
    assert set(compose["services"]) == {"prometheus", "grafana"}
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), source
    assert (
        "GRAFANA_ADMIN_PASSWORD:?"
        in compose["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    )  # no default password


def _series_query(query: str) -> tuple[str, dict[str, tuple[str, str]]]:
    """``name{label="v",other!=""}`` → the series name and {label: (operator, value)}."""
    match = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\}", query)
    assert match, query
    matchers = re.findall(r'([a-zA-Z_]+)\s*(=~|!~|!=|=)\s*"([^"]*)"', match[2])
    return match[1], {label: (op, value) for label, op, value in matchers}


def test_the_adapter_rules_read_series_a_real_scrape_of_the_api_holds(tmp_path):
    """prometheus-adapter serves the HPA's Pods metrics (deploy/prometheus/adapter-values.yaml)
    from series found by name and labels: each rule's series, with its label values, is in
    what the API answers on /metrics; namespace and pod are Prometheus's to add (its pod
    scrape job), never the API's, and are what the rule maps to the HPA's pods."""
    import yaml
    from fastapi.testclient import TestClient
    from prometheus_client.parser import text_string_to_metric_families

    from prodclass.db.session import upgrade
    from prodclass.serving.api.app import create_app
    from prodclass.settings import Settings

    settings = Settings(
        state_dir=tmp_path / "state",
        database_url=f"sqlite:///{tmp_path / 'app.db'}",
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        model_uri=str(tmp_path / "no-model"),  # the series exist without a model
        model_poll_seconds=0.0,
        monitoring_refresh_seconds=0.0,
        jwt_secret="adapter-test-key-" + "a" * 32,
    )
    upgrade(settings.db_url)
    with TestClient(create_app(settings)) as api:
        refused = api.post("/predict", data={"designation": "lampe de chevet"})  # no token
        assert refused.status_code == 401  # still a request of the route, counted as such
        scraped = api.get("/metrics").text
    samples = [
        (sample.name, sample.labels)
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
    ]

    rules = yaml.safe_load((DEPLOY / "prometheus/adapter-values.yaml").read_text())["rules"]
    assert rules["default"] is False
    assert len(rules["custom"]) >= 2
    for rule in rules["custom"]:
        name, matchers = _series_query(rule["seriesQuery"])
        assert re.fullmatch(rule["name"]["matches"], name), rule["name"]
        assert matchers.pop("namespace") == ("!=", "") and matchers.pop("pod") == ("!=", "")
        assert rule["resources"]["overrides"] == {
            "namespace": {"resource": "namespace"},
            "pod": {"resource": "pod"},
        }
        wanted = {label: value for label, (op, value) in matchers.items() if op == "="}
        assert wanted.keys() == matchers.keys(), matchers  # equality filters only
        found = [labels for sample, labels in samples if sample == name]
        assert found, f"{name} is not on the API's /metrics"
        assert any(wanted.items() <= labels.items() for labels in found), (wanted, found)
        query = rule["metricsQuery"]
        for placeholder in ("<<.Series>>", "<<.LabelMatchers>>", "by (<<.GroupBy>>)"):
            assert placeholder in query, (placeholder, query)
        for label, value in wanted.items():  # the query keeps the filter the series were found by
            assert f'{label}="{value}"' in query, query
