"""The API in front of an Azure ML endpoint: ``deploy/azureml/score.py`` served by Azure's own
inference server (``azmlinfsrv``, in a virtualenv of its own as an Azure ML environment has)
on a real registered model mounted as Azure ML mounts it, and the API forwarding to it
(``PRODCLASS_SCORING_URL``). Between the two, a gateway of our own plays the endpoint's front
door: it checks the bearer key as Azure ML does, and answers 503 or stalls when a test asks,
so retries and timeouts meet a real failing server."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from prodclass.registry.model_registry import model_folder, resolve_version
from prodclass.serving.api.app import create_app
from prodclass.serving.predictor import Predictor, ProductInput
from prodclass.settings import get_settings
from tests.conftest import PROJECT_ROOT
from tests.servers import free_port, start_process, stop_process, wait_until_up
from tests.serving.conftest import login, server_processes, wait_ready
from tests.serving.test_ui_apptest import _page, _text

KEY = "endpoint-key-" + "k" * 24
PROBE = "Produit de test"  # the designation of the API's readiness probe (remote_predictor.py)


def _server_env_module():
    spec = importlib.util.spec_from_file_location(
        "server_env", PROJECT_ROOT / "deploy/azureml/server_env.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def azmlinfsrv() -> Path:
    """Azure ML's inference server in its own virtualenv next to the project's (built, or
    completed, by the same helper as `make`)."""
    venv = Path(sys.executable).parent.parent / "azureml-server"
    return _server_env_module().ensure(venv)


@dataclass
class Endpoint:
    process: subprocess.Popen
    url: str  # the scoring URI
    log: Path


def start_endpoint(azmlinfsrv: Path, model_dir: Path, version: str, folder: Path) -> Endpoint:
    port = free_port()
    log = folder / f"azmlinfsrv-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRODCLASS_")}
    env |= {
        "AZUREML_MODEL_DIR": str(model_dir),
        "PRODCLASS_MODEL_VERSION": version,
        "PRODCLASS_STATE_DIR": str(folder / "endpoint-state"),
        "PYTHONPATH": str(PROJECT_ROOT / "src"),  # the checkout under test
        "NO_PROXY": "127.0.0.1,localhost",
    }
    command = [str(azmlinfsrv), "--entry_script", str(PROJECT_ROOT / "deploy/azureml/score.py")]
    process = start_process([*command, "--port", str(port)], log, env=env)
    base = f"http://127.0.0.1:{port}"

    # liveness (GET /) answers before init() ends; a prediction only once the model is loaded
    def ready() -> bool:
        answer = httpx.post(f"{base}/score", json={"products": [{"designation": "x"}]}, timeout=30)
        return answer.status_code == 200

    wait_until_up(process, log, ready, "azmlinfsrv", timeout=240)
    return Endpoint(process, f"{base}/score", log)


@dataclass
class Gateway:
    """The endpoint's front door: bearer key checked (401 otherwise), every request noted, and
    on demand the next requests answered 503 or held for ``stall`` seconds."""

    upstream: str
    fail_next: int = 0
    stall: float = 0.0
    seen: list[tuple[int, str]] = field(default_factory=list)  # (status, first designation)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def predictions_seen(self) -> list[int]:
        """Statuses answered to requests other than the API's readiness probes."""
        with self.lock:
            return [code for code, first in self.seen if first != PROBE]


@contextmanager
def gateway(upstream: str) -> Iterator[Gateway]:
    """A threaded HTTP server on a free loopback port relaying POST /score to ``upstream``."""
    state = Gateway(upstream)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                first = json.loads(body)["products"][0].get("designation", "")
            except (ValueError, LookupError, AttributeError):
                first = ""
            if self.headers.get("Authorization") != f"Bearer {KEY}":
                self._send(401, b'{"message": "invalid or missing key"}', first)
                return
            with state.lock:
                fail = state.fail_next > 0 and first != PROBE
                state.fail_next -= 1 if fail else 0
            if fail:
                self._send(503, b"upstream busy", first)
                return
            if state.stall and first != PROBE:
                time.sleep(state.stall)
            try:
                answer = httpx.post(
                    state.upstream, content=body, headers={"Content-Type": "application/json"},
                    timeout=120,
                )  # fmt: skip
            except httpx.HTTPError as exc:  # what a gateway answers for a dead upstream
                self._send(502, f"upstream unreachable: {exc}".encode(), first)
                return
            self._send(answer.status_code, answer.content, first)

        def _send(self, code: int, body: bytes, first: str) -> None:
            with state.lock:
                state.seen.append((code, first))
            try:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:  # the client gave up (its timeout)
                pass

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/score"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def endpoint(served, azmlinfsrv, tmp_path_factory) -> Iterator[Endpoint]:
    """score.py under azmlinfsrv with the registered champion (the multimodal version) laid out
    as Azure ML mounts a registered model."""
    folder = tmp_path_factory.mktemp("azureml-endpoint")
    name, version = served.settings.registered_model_name, served.multimodal_version
    mounted = folder / "azureml-models" / name / version
    shutil.copytree(model_folder(f"models:/{name}/{version}"), mounted / "model")
    handle = start_endpoint(azmlinfsrv, mounted, version, folder)
    yield handle
    stop_process(handle.process)


@pytest.fixture(scope="module")
def front(endpoint) -> Iterator[Gateway]:
    with gateway(endpoint.url) as state:
        yield state


def remote_settings(served, url: str, **overrides):
    return served.settings.model_copy(
        update={
            "scoring_url": url,
            "scoring_key": SecretStr(KEY),
            "scoring_timeout_seconds": 20.0,
            "scoring_retries": 2,
            "scoring_backoff_seconds": 0.05,
            "model_poll_seconds": 0.0,
            "monitoring_refresh_seconds": 0.0,
        }
        | overrides
    )


@pytest.fixture(scope="module")
def remote(served, front) -> Iterator[TestClient]:
    """The API forwarding to the endpoint through the gateway."""
    with TestClient(create_app(remote_settings(served, front.url))) as client:
        wait_ready(client)
        yield client


@pytest.fixture(scope="module")
def local_predictor(served) -> Predictor:
    name = served.settings.registered_model_name
    return Predictor.load(f"models:/{name}/{served.multimodal_version}")


def test_the_endpoint_answers_what_the_local_predictor_answers(
    remote, front, served, sample_products, local_predictor
):
    headers = login(remote, "client")
    both = sample_products.both[:4]
    body = {
        "products": [
            {
                "designation": fields["designation"],
                "description": fields["description"],
                "product_id": fields["product_id"],
                "image_base64": base64.b64encode(photo).decode(),
            }
            for fields, photo in both
        ]
        + [
            {"designation": "Piscine tubulaire ronde"},
            {"image_base64": base64.b64encode(both[0][1]).decode()},
        ],
        "top_k": 3,
    }
    answer = remote.post("/predict/batch", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    products = [ProductInput(f["designation"], f["description"], photo) for f, photo in both]
    products += [ProductInput("Piscine tubulaire ronde"), ProductInput(image=both[0][1])]
    reference = local_predictor.predict(products, top_k=3)
    assert [p["inputs"] for p in predictions] == [r.inputs for r in reference]
    for got, want in zip(predictions, reference):
        assert [c["prdtypecode"] for c in got["top"]] == [c.prdtypecode for c in want.top]
        assert [c["probability"] for c in got["top"]] == pytest.approx(
            [c.probability for c in want.top], abs=1e-5
        )
    model = predictions[0]["model"]  # the endpoint's model, as it names it
    assert model["version"] == served.multimodal_version
    assert model["name"] == served.settings.registered_model_name
    assert model["family"] == local_predictor.family
    assert predictions[0]["product_id"] == both[0][0]["product_id"]

    fields, photo = both[1]
    single = remote.post(
        "/predict",
        data={"designation": fields["designation"], "top_k": "2"},
        files={"image": ("p.jpg", photo, "image/jpeg")},
        headers=headers,
    )
    assert single.status_code == 200, single.text
    (want,) = local_predictor.predict([ProductInput(fields["designation"], image=photo)], top_k=2)
    assert single.json()["prdtypecode"] == want.prdtypecode
    assert single.json()["model"]["version"] == served.multimodal_version

    ready = remote.get("/ready").json()
    assert ready["ready"] and ready["model_source"] == "endpoint"
    assert ready["model_version"] == served.multimodal_version
    current = remote.get("/models/current", headers=headers).json()
    assert current["serving"]["version"] == served.multimodal_version
    assert current["last_load"]["state"] == "serving"


def test_bad_products_are_refused_here_and_never_sent(remote, front):
    headers = login(remote, "client")
    before = len(front.predictions_seen())
    empty = remote.post("/predict", data={"designation": ""}, headers=headers)
    assert empty.status_code == 422 and "no title" in empty.json()["detail"]
    not_photo = remote.post(
        "/predict/batch",
        json={
            "products": [{"designation": "x"}, {"image_base64": base64.b64encode(b"text").decode()}]
        },
        headers=headers,
    )
    assert not_photo.status_code == 422 and "product 1" in not_photo.json()["detail"]
    assert len(front.predictions_seen()) == before


def test_features_that_need_the_model_here_say_so(remote, served):
    headers = login(remote, "admin")
    similar = remote.get("/products/similar", params={"designation": "lampe"}, headers=headers)
    assert similar.status_code == 409
    assert "scoring endpoint" in similar.json()["detail"]
    load = remote.post("/models/1/load", headers=headers)
    assert load.status_code == 409 and "deploy the version" in load.json()["detail"]
    name = served.settings.registered_model_name
    promote = remote.post(f"/models/{served.text_version}/promote", headers=headers)
    assert promote.status_code == 409 and "scoring endpoint" in promote.json()["detail"]
    assert resolve_version(f"models:/{name}@champion") == served.multimodal_version  # unmoved


def test_a_5xx_is_retried_and_the_prediction_answers(remote, front):
    headers = login(remote, "client")
    before = len(front.predictions_seen())
    front.fail_next = 2  # two 503s, then the endpoint: within the two retries
    answer = remote.post("/predict", data={"designation": "Piscine tubulaire"}, headers=headers)
    assert answer.status_code == 200, answer.text
    assert front.predictions_seen()[before:] == [503, 503, 200]


def test_a_5xx_that_lasts_is_a_502_with_the_reason(remote, front):
    headers = login(remote, "client")
    before = len(front.predictions_seen())
    front.fail_next = 3  # one more than the retries
    answer = remote.post("/predict", data={"designation": "Piscine tubulaire"}, headers=headers)
    assert answer.status_code == 502
    assert "answered 503 after 3 attempt(s)" in answer.json()["detail"]
    assert front.predictions_seen()[before:] == [503, 503, 503]


def test_a_wrong_key_is_a_502_at_once_not_retried(served, front):
    settings = remote_settings(served, front.url, scoring_key=SecretStr("not-the-key"))
    with TestClient(create_app(settings)) as client:
        headers = login(client, "client")
        before = len(front.predictions_seen())
        answer = client.post("/predict", data={"designation": "Lampe"}, headers=headers)
        assert answer.status_code == 502
        assert "answered 401" in answer.json()["detail"]
        assert front.predictions_seen()[before:] == [401]
        ready = client.get("/ready")
        assert ready.status_code == 503 and "401" in " ".join(ready.json()["problems"])


def test_a_slow_endpoint_is_a_504_with_the_reason(served, front):
    settings = remote_settings(served, front.url, scoring_timeout_seconds=1.0)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        headers = login(client, "client")
        front.stall = 3.0
        try:
            answer = client.post("/predict", data={"designation": "Lampe"}, headers=headers)
        finally:
            front.stall = 0.0
        assert answer.status_code == 504
        assert "did not answer within 1 s" in answer.json()["detail"]


def test_prodclass_serve_and_the_web_app_on_top_of_the_endpoint(
    served, front, tmp_path, sample_products, local_predictor, monkeypatch
):
    """A real `prodclass serve` configured by its environment, and the web app's classify and
    batch pages on it, unchanged."""
    before = len(front.predictions_seen())
    with server_processes(served, tmp_path) as start:
        api = start(PRODCLASS_SCORING_URL=front.url, PRODCLASS_SCORING_KEY=KEY).url
        ready = httpx.get(f"{api}/ready").json()
        assert ready["model_source"] == "endpoint"
        assert ready["model_version"] == served.multimodal_version
        monkeypatch.setenv("PRODCLASS_API_URL", api)
        get_settings.cache_clear()
        try:
            fields, photo = sample_products.both[0]
            at = _page("classify", api, "client")
            at.text_input(key="classify-designation").input(fields["designation"])
            at.file_uploader(key="classify-photo").upload("photo.jpg", photo, "image/jpeg")
            at.run()
            at.button[0].click().run()
            (want,) = local_predictor.predict([ProductInput(fields["designation"], image=photo)])
            assert at.subheader[0].value.startswith(str(want.prdtypecode))
            assert f"version {served.multimodal_version}" in _text(at)

            rows, photos = {}, io.BytesIO()
            with zipfile.ZipFile(photos, "w") as archive:
                for fields, photo in sample_products.both[10:13]:
                    name = f"image_{fields['imageid']}_product_{fields['product_id']}.jpg"
                    archive.writestr(name, photo)
                    rows[fields["product_identifier"]] = {
                        "designation": fields["designation"],
                        "description": "",
                        "productid": fields["product_id"],
                        "imageid": fields["imageid"],
                    }
            csv = pd.DataFrame.from_dict(rows, orient="index").to_csv().encode()
            at = _page("batch", api, "client")
            at.file_uploader(key="batch-csv").upload("X_test.csv", csv, "text/csv")
            at.file_uploader(key="batch-photos").upload(
                "p.zip", photos.getvalue(), "application/zip"
            )
            at.run()
            at.button[0].click().run()
            table = at.dataframe[0].value
            assert list(table.index) == list(rows)
            assert list(table["inputs"]) == ["text+image"] * 3
        finally:
            get_settings.cache_clear()
    assert 200 in front.predictions_seen()[before:]


def test_the_endpoint_stopped_is_a_502_and_not_ready(
    served, azmlinfsrv, endpoint, tmp_path, remote, front
):
    """Last: stops the module's endpoint (the API keeps running and says why it cannot answer)."""
    headers = login(remote, "client")
    stop_process(endpoint.process)
    answer = remote.post("/predict", data={"designation": "Lampe"}, headers=headers)
    assert answer.status_code == 502
    assert "answered 502 after 3 attempt(s): upstream unreachable" in answer.json()["detail"]
    # without the gateway: the API straight at the stopped server
    with TestClient(create_app(remote_settings(served, endpoint.url))) as client:
        headers = login(client, "client")
        direct = client.post("/predict", data={"designation": "Lampe"}, headers=headers)
        assert direct.status_code == 502
        assert "cannot be reached after 3 attempt(s)" in direct.json()["detail"]
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert "cannot be reached" in " ".join(ready.json()["problems"])
