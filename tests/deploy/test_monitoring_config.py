"""The shipped Prometheus rules and Grafana dashboard: checked and unit-tested by the real
tools where they exist (promtool), and every metric they use is one the API exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from tests.conftest import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy"
PROMTOOL = shutil.which("promtool")


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
