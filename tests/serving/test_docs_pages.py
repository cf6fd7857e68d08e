"""/docs and /redoc work without a network: every script, style and icon they load is served by
the API itself (from the fastapi-offline package), and headless Chromium that can resolve no
host renders Swagger UI's list of operations and ReDoc's from the API alone."""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from prodclass.serving.api.app import create_app
from prodclass.settings import Settings
from tests.servers import free_port, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
REDOCLY_BADGE = "https://cdn.redoc.ly/redoc/logo-mini.svg"
# the URLs a page loads: <script src>, <link href>, and the spec Swagger UI / ReDoc fetch
LOADED = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']|url:\s*'([^']+)'""")


@pytest.fixture(scope="module")
def app():
    """The API's app, built and not started: the pages need no model and no database."""
    return create_app(Settings(_env_file=None))


@pytest.fixture(scope="module")
def client(app) -> TestClient:
    return TestClient(app)


def loaded_urls(html: str) -> list[str]:
    return [a or b for a, b in LOADED.findall(html)]


@pytest.mark.parametrize(
    ("page", "kinds"),
    [("/docs", {"js", "css", "png", "openapi"}), ("/redoc", {"js", "png", "openapi"})],
)
def test_the_docs_pages_load_only_the_apis_own_files(client, page, kinds):
    answer = client.get(page)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    urls = loaded_urls(answer.text)
    assert urls, f"{page} loads nothing: the pattern no longer matches FastAPI's page"
    assert not [u for u in urls if "://" in u or u.startswith("//")], urls  # no other host
    assert "fonts.googleapis" not in answer.text and "cdn." not in answer.text
    seen = set()
    for url in urls:
        got = client.get(url)
        assert got.status_code == 200, f"{page} loads {url}: {got.status_code}"
        kind = "openapi" if url == "/openapi.json" else url.rsplit(".", 1)[-1]
        seen.add(kind)
        expected = {"js": "text/javascript", "css": "text/css", "png": "image/png"}
        if kind in expected:
            assert got.headers["content-type"].startswith(expected[kind]), url
            assert len(got.content) > 1000, f"{url} is {len(got.content)} bytes"
    assert seen == kinds
    js = [u for u in urls if u.endswith(".js")]
    script = client.get(js[0]).text
    assert ("SwaggerUIBundle" if page == "/docs" else "Redoc") in script


def test_the_docs_pages_stay_open_to_anyone_and_out_of_the_openapi_document(client):
    # no token: the pages, their assets and the document answer, as FastAPI's pages did
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect", "/openapi.json"):
        assert client.get(path).status_code == 200, path
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(("/docs", "/redoc"))]
    assert client.get("/docs/assets/nothing.js").status_code == 404
    assert client.get("/docs/assets/../../settings.py").status_code == 404


# ---- in a browser that reaches no other host ------------------------------------------------


@pytest.fixture(scope="module")
def api_url(app) -> Iterator[str]:
    """The app behind a real uvicorn server in this process. Its lifespan (model, database)
    stays off: the pages and the OpenAPI document need neither."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: server.started, "uvicorn serving the app", timeout=30)
    yield url
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (`make system-deps`)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,1100",
        "--no-proxy-server",
        # every host name fails to resolve: a page that needs a CDN cannot get it
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def operations(api_url: str) -> int:
    document = httpx.get(f"{api_url}/openapi.json", timeout=10).json()
    return sum(len(methods) for methods in document["paths"].values())


def resources(driver) -> list[str]:
    return driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")


def test_swagger_ui_lists_every_operation_offline(browser, api_url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{api_url}/docs")
    WebDriverWait(browser, 60).until(
        ready.presence_of_element_located((By.CSS_SELECTOR, ".opblock"))
    )
    blocks = browser.find_elements(By.CSS_SELECTOR, ".opblock")
    assert len(blocks) == operations(api_url)
    assert browser.find_element(By.CSS_SELECTOR, ".info .title").text.startswith("prodclass")
    assert all(url.startswith(api_url) for url in resources(browser)), resources(browser)


def test_redoc_lists_every_operation_offline(browser, api_url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{api_url}/redoc")
    selector = "[data-section-id^='operation/']"
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, selector))
    found = browser.find_elements(By.CSS_SELECTOR, selector)
    assert len({e.get_attribute("data-section-id") for e in found}) == operations(api_url)
    elsewhere = [url for url in resources(browser) if not url.startswith(api_url)]
    # the one exception, built into ReDoc's bundle: the sidebar's "API docs by Redocly" badge
    # tries its logo on Redocly's CDN and shows the words alone when it cannot have it
    assert set(elsewhere) <= {REDOCLY_BADGE}, elsewhere
