"""A real Prometheus (Debian's) scrapes a real `prodclass serve` with the shipped scrape and
alert configuration: the API is up, its metrics are queryable, the rules load."""

from __future__ import annotations

import shutil

import httpx
import pytest
import yaml

from tests.conftest import PROJECT_ROOT
from tests.servers import free_port, start_process, stop_process, wait_for, wait_until_up

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="needs Debian's prometheus (make system-deps installs it)"
)


@pytest.fixture
def prometheus(api_url, tmp_path):
    """Prometheus with deploy/prometheus's config, its target list pointing at the test API."""
    shipped = yaml.safe_load((PROJECT_ROOT / "deploy/prometheus/prometheus.yml").read_text())
    shipped["global"]["scrape_interval"] = "1s"
    shipped["global"]["evaluation_interval"] = "1s"
    shipped["rule_files"] = [str(PROJECT_ROOT / "deploy/prometheus/alerts.yml")]
    targets = tmp_path / "targets"
    targets.mkdir()
    (targets / "api.yml").write_text(yaml.safe_dump([{"targets": [api_url.split("//")[1]]}]))
    shipped["scrape_configs"][0]["file_sd_configs"] = [{"files": [str(targets / "*.yml")]}]
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(shipped))
    port = free_port()
    log = tmp_path / "prometheus.log"
    process = start_process(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        log,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_up(
        process,
        log,
        lambda: httpx.get(f"{url}/-/ready").status_code == 200,
        "prometheus",
        timeout=60,
    )
    yield url
    stop_process(process)


def _query(url: str, expr: str) -> list:
    answer = httpx.get(f"{url}/api/v1/query", params={"query": expr}).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def test_prometheus_scrapes_the_api_and_loads_the_alert_rules(prometheus, served):
    scraped = lambda: _query(prometheus, 'up{job="prodclass-api"} == 1')  # noqa: E731
    wait_for(scraped, "Prometheus to scrape the API", 60, every=0.5)
    info = _query(prometheus, "prodclass_model_info")
    assert info and info[0]["metric"]["version"] == served.multimodal_version
    rules = httpx.get(f"{prometheus}/api/v1/rules").json()["data"]["groups"]
    names = {rule["name"] for group in rules for rule in group["rules"]}
    assert {"ProdclassApiDown", "ProdclassDriftDetected", "ProdclassQualityDrop"} <= names
