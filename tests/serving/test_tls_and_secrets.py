"""`prodclass serve` over HTTPS (certificate and key from settings), secrets that never reach
its log even at DEBUG, and production mode refusing to start with weak secrets."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import subprocess

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.servers import free_port, start_process, stop_process, tail, wait_until_up
from tests.serving.conftest import PASSWORDS, PRODCLASS, SERVER_JWT_SECRET, server_env


def _self_signed(folder) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


def test_https_serving_and_no_secret_in_the_debug_log(served, tmp_path):
    cert, key = _self_signed(tmp_path)
    encryption_key = f"k1:{base64.b64encode(os.urandom(32)).decode()}"
    port = free_port()
    log = tmp_path / "serve.log"
    env = server_env(
        served,
        PRODCLASS_TLS_CERTFILE=cert,
        PRODCLASS_TLS_KEYFILE=key,
        PRODCLASS_LOG_LEVEL="DEBUG",
        PRODCLASS_ENCRYPTION_KEYS=encryption_key,
        PRODCLASS_MODEL_URI=f"models:/{served.settings.registered_model_name}/{served.text_version}",
    )
    process = start_process(
        [*PRODCLASS, "serve", "--host", "127.0.0.1", "--port", str(port)], log, env=env
    )
    url = f"https://127.0.0.1:{port}"
    try:
        with httpx.Client(verify=cert, timeout=30) as client:
            wait_until_up(
                process,
                log,
                lambda: client.get(f"{url}/ready").status_code == 200,
                "prodclass serve (HTTPS)",
            )
            signed_in = client.post(
                f"{url}/token", data={"username": "client", "password": PASSWORDS["client"]}
            )
            assert signed_in.status_code == 200
            token = signed_in.json()["access_token"]
            answer = client.post(
                f"{url}/predict",
                data={"designation": "Lot de 6 verres à vin"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert answer.status_code == 200, answer.text
            refused = client.post(f"{url}/token", data={"username": "admin", "password": "x" * 9})
            assert refused.status_code == 401
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the HTTPS port gets no answer
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).raise_for_status()
        with pytest.raises(httpx.ConnectError):  # nor does a client that does not trust it
            httpx.get(f"{url}/health", timeout=5)
    finally:
        stop_process(process, timeout=30)
    text = log.read_text()
    assert "DEBUG" in text or "INFO" in text, tail(log)  # the log did record things
    for secret in (SERVER_JWT_SECRET, encryption_key.split(":")[1], PASSWORDS["client"], token):
        assert secret not in text


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"PRODCLASS_JWT_SECRET": "too-short"}, "PRODCLASS_JWT_SECRET"),
        ({"PRODCLASS_JWT_SECRET": "a" * 40}, "PRODCLASS_JWT_SECRET"),  # long but trivial
        ({}, "PRODCLASS_ENCRYPTION_KEYS is required"),  # a good secret, no encryption key
    ],
)
def test_production_mode_refuses_to_start_with_weak_secrets(served, overrides, reason):
    env = server_env(served, PRODCLASS_ENVIRONMENT="production", **overrides)
    done = subprocess.run(
        [*PRODCLASS, "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert reason in done.stdout + done.stderr
