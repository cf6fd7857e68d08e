"""End to end in a real browser: headless Chromium (Debian's, driven by Selenium) signs in to
`prodclass ui`, uploads a real sample photo with its title, and sees the category the real API
(a real `prodclass serve`) gives it, which is the product's true category. A screenshot is
kept in test-artifacts/ (and is the README's picture)."""

from __future__ import annotations

import shutil
import time

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

from prodclass.data.layout import ChallengeLayout, read_labels
from tests.conftest import PROJECT_ROOT
from tests.servers import free_port, start_process, stop_process, wait_until_up
from tests.serving.conftest import PASSWORDS, PRODCLASS, server_env

ARTIFACTS = PROJECT_ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver (`make system-deps` installs them)",
)


@pytest.fixture(scope="module")
def ui_url(served, api_url, tmp_path_factory) -> str:
    port = free_port()
    log = tmp_path_factory.mktemp("ui") / "ui.log"
    process = start_process(
        [*PRODCLASS, "ui", "--host", "127.0.0.1", "--port", str(port)],
        log,
        env=server_env(served, PRODCLASS_API_URL=api_url),
    )
    url = f"http://127.0.0.1:{port}"
    healthy = lambda: httpx.get(f"{url}/_stcore/health", timeout=2).text == "ok"  # noqa: E731
    wait_until_up(process, log, healthy, "prodclass ui", timeout=90)
    yield url
    stop_process(process)


@pytest.fixture
def browser(request):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,1100",
        "--no-proxy-server",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / f"{request.node.name}-failed.png"))
        (ARTIFACTS / f"{request.node.name}-failed.html").write_text(driver.page_source)
    driver.quit()


def _well_classified_product(api_url, sample, sample_products) -> tuple[dict, bytes, int]:
    """A real product (title + photo) whose true category the served model gets right."""
    labels = read_labels(ChallengeLayout(sample).y_train)["prdtypecode"]
    token = httpx.post(
        f"{api_url}/token", data={"username": "client", "password": PASSWORDS["client"]}
    )
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    for fields, photo in sample_products.both:
        answer = httpx.post(
            f"{api_url}/predict",
            data={"designation": fields["designation"]},
            files={"image": ("p.jpg", photo)},
            headers=headers,
        ).json()
        truth = int(labels[fields["product_identifier"]])
        if answer["prdtypecode"] == truth:
            return fields, photo, truth
    pytest.fail("the served model gets none of the sample products right")


def test_sign_in_upload_a_photo_and_see_its_category(
    browser, ui_url, api_url, sample, sample_products, tmp_path
):
    fields, photo, truth = _well_classified_product(api_url, sample, sample_products)
    photo_file = tmp_path / "product.jpg"
    photo_file.write_bytes(photo)
    wait = WebDriverWait(browser, 120)  # the first photo loads the model: slow on a busy machine
    browser.get(ui_url)
    wait.until(
        ready.presence_of_element_located((By.CSS_SELECTOR, "input[aria-label='User name']"))
    )
    browser.find_element(By.CSS_SELECTOR, "input[aria-label='User name']").send_keys("client")
    browser.find_element(By.CSS_SELECTOR, "input[aria-label='Password']").send_keys(
        PASSWORDS["client"]
    )
    browser.find_element(By.XPATH, "//button[normalize-space()='Sign in']").click()
    title = wait.until(
        ready.presence_of_element_located(
            (By.CSS_SELECTOR, "input[aria-label='Title (designation)']")
        )
    )
    title.send_keys(fields["designation"])
    browser.find_element(By.CSS_SELECTOR, "input[type='file']").send_keys(str(photo_file))
    wait.until(  # the preview, captioned with the file's name
        ready.presence_of_element_located((By.XPATH, "//*[normalize-space()='product.jpg']"))
    )
    browser.find_element(By.XPATH, "//button[normalize-space()='Classify']").click()
    answer = wait.until(
        ready.presence_of_element_located(
            (By.XPATH, f"//h3[starts-with(normalize-space(), '{truth} ·')]")
        )
    )
    time.sleep(1.5)  # let the chart draw before the picture
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "ui-classify.png"))
    assert answer.text.startswith(f"{truth} ·")
    assert "Answered by model prodclass version" in browser.page_source
