"""A real Prometheus (Debian's) scrapes a real `prodclass serve` with the shipped scrape and
alert configuration: the API is up, its metrics are queryable, the rules load."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import PROJECT_ROOT
from tests.servers import PROMETHEUS, running_prometheus, wait_for

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="needs Debian's prometheus (make system-deps installs it)"
)


@pytest.fixture
def prometheus(api_url, tmp_path):
    """Prometheus with deploy/prometheus's config, its target list pointing at the test API."""
    with running_prometheus(
        tmp_path, api_url, PROJECT_ROOT / "deploy/prometheus/alerts.yml"
    ) as url:
        yield url


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
