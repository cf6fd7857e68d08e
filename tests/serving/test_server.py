"""`prodclass serve` as users run it: a real uvicorn process on loopback, driven over HTTP.

A hot swap while eight clients post real photos fails no request; a full queue answers 503 with
Retry-After; the first admin comes from `prodclass users create --password-stdin`; on
PostgreSQL the prediction log and feedback land in the real server's tables.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.servers import with_database
from tests.serving.conftest import PASSWORDS, PRODCLASS, server_env, wait_serving


def _token(url: str, username: str, password: str) -> dict[str, str]:
    answer = httpx.post(f"{url}/token", data={"username": username, "password": password})
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def test_hot_swap_under_concurrent_load_fails_no_request(start_server, served, sample_products):
    url = start_server()
    admin = _token(url, "admin", PASSWORDS["admin"])
    client = _token(url, "client", PASSWORDS["client"])
    stop = threading.Event()
    statuses: Counter[int] = Counter()
    versions: Counter[str] = Counter()
    lock = threading.Lock()

    def post_products(worker: int) -> None:
        with httpx.Client(base_url=url, headers=client, timeout=60) as http:
            i = worker
            while not stop.is_set():
                fields, photo = sample_products.both[i % len(sample_products.both)]
                answer = http.post("/predict", data=fields, files={"image": ("p.jpg", photo)})
                with lock:
                    statuses[answer.status_code] += 1
                    if answer.status_code == 200:
                        versions[answer.json()["model"]["version"]] += 1
                i += 8

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(post_products, w) for w in range(8)]
        time.sleep(2)
        for version in (served.text_version, served.multimodal_version):
            assert httpx.post(f"{url}/models/{version}/load", headers=admin).status_code == 202
            with httpx.Client(base_url=url) as http:
                current = wait_serving(http, admin, version)
            assert current["serving"]["version"] == version, current
            time.sleep(2)  # requests flow on the new version
        stop.set()
        for future in futures:
            future.result()
    assert set(statuses) == {200}, statuses
    assert sum(statuses.values()) >= 40
    assert versions[served.text_version] > 0 and versions[served.multimodal_version] > 0


def test_a_full_queue_answers_503_with_retry_after(start_server, served, sample_products):
    url = start_server(PRODCLASS_API_QUEUE_LIMIT="2", PRODCLASS_API_PREDICT_WORKERS="1")
    client = _token(url, "client", PASSWORDS["client"])

    def post(i: int) -> httpx.Response:
        fields, photo = sample_products.both[i % len(sample_products.both)]
        return httpx.post(
            f"{url}/predict",
            data=fields,
            files={"image": ("p.jpg", photo)},
            headers=client,
            timeout=60,
        )

    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(post, range(48)))
    codes = Counter(a.status_code for a in answers)
    assert set(codes) == {200, 503}, codes
    refused = next(a for a in answers if a.status_code == 503)
    assert int(refused.headers["Retry-After"]) >= 1 and "queue is full" in refused.json()["detail"]
    metrics = httpx.get(f"{url}/metrics").text
    assert "prodclass_overload_rejections_total" in metrics


@pytest.mark.postgres
def test_first_admin_from_the_cli_and_everything_stored_in_postgresql(
    start_server, served, sample_products, postgres_url, database
):
    import psycopg

    db_url = with_database(postgres_url, database)
    env = server_env(served, PRODCLASS_DATABASE_URL=db_url)
    for args, stdin in (
        (["db", "upgrade"], ""),
        (["users", "create", "boss", "--role", "admin", "--password-stdin"], "boss-password-1\n"),
    ):
        done = subprocess.run(
            [*PRODCLASS, *args], env=env, input=stdin, text=True, capture_output=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
    refused = subprocess.run(
        [*PRODCLASS, "users", "create", "weak", "--role", "client", "--password-stdin"],
        env=env,
        input="short\n",
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert refused.returncode == 1 and "at least" in refused.stderr
    url = start_server(PRODCLASS_DATABASE_URL=db_url, PRODCLASS_PREDICTION_LOG_FLUSH_SECONDS="0.2")
    boss = _token(url, "boss", "boss-password-1")
    created = httpx.post(
        f"{url}/users",
        json={"username": "rev", "password": "rev-password-1", "role": "reviewer"},
        headers=boss,
    )
    assert created.status_code == 201
    fields, photo = sample_products.both[3]
    answer = httpx.post(
        f"{url}/predict", data=fields, files={"image": ("p.jpg", photo)}, headers=boss, timeout=60
    ).json()
    reviewer = _token(url, "rev", "rev-password-1")
    feedback = httpx.post(
        f"{url}/feedback/{answer['prediction_id']}", json={"prdtypecode": 2583}, headers=reviewer
    )
    assert feedback.status_code == 201, feedback.text
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT p.username, p.model_version, p.image_sha256, f.prdtypecode, f.username "
            "FROM predictions p JOIN feedback f ON f.prediction_id = p.id WHERE p.id = %s",
            (answer["prediction_id"],),
        ).fetchone()
        roles = dict(conn.execute("SELECT username, role FROM users").fetchall())
    assert row[:2] == ("boss", served.multimodal_version) and row[2] and row[3:] == (2583, "rev")
    assert roles == {"boss": "admin", "rev": "reviewer"}
