"""A real `prodclass serve` for the benchmarks: migrate its database, create the benchmark's
client account, start the server on a free loopback port and wait until /ready answers."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

PRODCLASS = str(Path(sys.executable).with_name("prodclass"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_api(
    env: dict[str, str], log: Path, user: str, password: str, timeout: float = 300
) -> tuple[subprocess.Popen, str]:
    """The server process and its URL, once ready (exits with the server's log otherwise)."""
    for args, stdin in (
        (["db", "upgrade"], ""),
        (["users", "create", user, "--role", "client", "--password-stdin"], password + "\n"),
    ):
        done = subprocess.run(
            [PRODCLASS, *args], env=env, input=stdin, text=True, capture_output=True
        )
        if done.returncode:
            raise SystemExit(f"prodclass {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    port = free_port()
    process = subprocess.Popen(
        [PRODCLASS, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit(f"server not ready after {timeout:.0f} s:\n{log.read_text()[-3000:]}")
