"""The set-up logic itself: Debian packages installed only when missing (one at a time, never
npm beside an npm that exists), the demo asking only for what it uses, and PostgreSQL and Redis
tests running on a private server when the configured one does not answer."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import PROJECT_ROOT
from tests.servers import PG_BIN, free_port

SCRIPT = PROJECT_ROOT / "deploy/system/install-packages.sh"
# every command a package provides, as the script checks them
PROVIDED = {
    "tesseract",
    "chromium",
    "chromedriver",
    "promtool",
    "prometheus-alertmanager",
    "amtool",
    "docker-compose",
    "npm",
    "redis-server",
}


def fake_machine(tmp_path: Path, missing: set[str], refuse: set[str] = frozenset()) -> dict:
    """A PATH holding only the basic tools and stubs of the commands not in ``missing``, with
    an apt-get that records its calls (and fails for the packages in ``refuse``)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "grep", "id", "cat"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    # present commands are links to real programs, not freshly written scripts: exec'ing a
    # file just written can fail with "text file busy" when another thread forks meanwhile
    for command in PROVIDED - missing:
        real = shutil.which("tesseract") if command == "tesseract" else shutil.which("true")
        (bin_dir / command).symlink_to(real)
    calls = tmp_path / "apt-calls"
    apt = bin_dir / "apt-get"
    refused = " ".join(sorted(refuse))
    apt.write_text(
        "#!/bin/bash\n"
        f'echo "$*" >> {calls}\n'
        f'for p in {refused}; do [[ " $* " == *" $p "* ]] && exit 100; done\n'
        "exit 0\n"
    )
    apt.chmod(0o755)
    python = shutil.which("false") if "venv" in missing else shutil.which("true")
    postgres_root = tmp_path / "postgresql"
    if "initdb" not in missing:
        (postgres_root / "15/bin").mkdir(parents=True)
        (postgres_root / "15/bin/initdb").touch()
    env = {"PATH": str(bin_dir), "PYTHON": python, "POSTGRES_ROOT": str(postgres_root)}
    return {"env": env, "calls": calls}


def run_script(machine: dict, group: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [shutil.which("bash"), str(SCRIPT), group],
        env=machine["env"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def apt_installs(machine: dict) -> list[str]:
    if not machine["calls"].is_file():
        return []
    lines = machine["calls"].read_text().splitlines()
    return [line.split()[-1] for line in lines if line.split()[:1] == ["install"]]


def test_only_the_missing_tesseract_packages_are_asked_for(tmp_path):
    machine = fake_machine(tmp_path, missing={"tesseract"})
    done = run_script(machine, "demo")
    assert done.returncode == 0, done.stderr
    assert apt_installs(machine) == ["tesseract-ocr", "tesseract-ocr-fra", "tesseract-ocr-eng"]
    assert "tesseract-ocr: missing" in done.stdout
    assert "python3-venv: present" in done.stdout
    # the test tools are present: nothing asked, npm above all
    test_run = run_script(machine, "test")
    assert test_run.returncode == 0, test_run.stderr
    assert "npm" not in apt_installs(machine)
    assert "  npm: present" in test_run.stdout


@pytest.mark.parametrize("group", ["demo", "test"])
def test_nothing_missing_means_no_apt_call(tmp_path, group):
    machine = fake_machine(tmp_path, missing=set())
    done = run_script(machine, group)
    assert done.returncode == 0, done.stderr
    assert not machine["calls"].exists(), "apt-get was called with everything present"
    assert "missing" not in done.stdout


def test_a_package_that_cannot_install_is_named_and_the_others_still_install(tmp_path):
    machine = fake_machine(
        tmp_path, missing={"npm", "promtool", "initdb", "redis-server"}, refuse={"npm"}
    )
    done = run_script(machine, "test")
    assert done.returncode == 1
    assert apt_installs(machine) == ["prometheus", "npm", "postgresql", "redis-server"]
    assert "could not install npm: run 'apt-get install npm' by hand" in done.stderr


@pytest.mark.parametrize("gone", ["amtool", "prometheus-alertmanager"])
def test_alertmanager_is_installed_when_either_of_its_commands_is_missing(tmp_path, gone):
    machine = fake_machine(tmp_path, missing={gone})
    done = run_script(machine, "test")
    assert done.returncode == 0, done.stderr
    assert apt_installs(machine) == ["prometheus-alertmanager"]
    assert "prometheus-alertmanager: missing" in done.stdout
    assert "  prometheus: present" in done.stdout


def test_the_demo_installs_only_what_it_uses_and_the_tests_their_tools(tmp_path):
    def planned(target: str) -> str:
        return subprocess.run(
            ["make", "-n", "--always-make", target],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout

    demo = planned("demo")
    assert "install-packages.sh demo" in demo
    assert "install-packages.sh test" not in demo
    test = planned("test")
    assert "install-packages.sh demo" in test and "install-packages.sh test" in test


INNER_TEST = """
import psycopg


def test_a_real_postgres_database(postgres_url, database):
    from tests.servers import with_database

    with psycopg.connect(with_database(postgres_url, database), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x text)")
        conn.execute("INSERT INTO t VALUES ('ok')")
        assert conn.execute("SELECT x FROM t").fetchone() == ("ok",)
"""


@pytest.mark.slow  # starts a PostgreSQL cluster of its own
@pytest.mark.skipif(not (PG_BIN / "initdb").is_file(), reason="needs PostgreSQL's server binaries")
def test_postgres_tests_run_on_a_private_cluster_when_the_configured_server_is_closed(tmp_path):
    inner = tmp_path / "test_inner.py"
    inner.write_text(INNER_TEST)
    env = os.environ | {
        "PRODCLASS_TEST_POSTGRES_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
        "PRODCLASS_REQUIRE_POSTGRES": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.servers", "-p", "no:cacheprovider",
         "-q", "-rs", "--rootdir", str(tmp_path), str(inner)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout and "skipped" not in done.stdout, done.stdout


REDIS_INNER_TEST = """
def test_a_real_redis(redis_space):
    with redis_space.client() as client:
        client.set(f"{redis_space.prefix}:x", "ok")
        assert client.get(f"{redis_space.prefix}:x") == b"ok"
"""


@pytest.mark.slow  # starts a Redis server of its own
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_redis_tests_run_on_a_private_server_when_the_configured_one_is_closed(tmp_path):
    inner = tmp_path / "test_inner_redis.py"
    inner.write_text(REDIS_INNER_TEST)
    env = os.environ | {
        "PRODCLASS_TEST_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "PRODCLASS_REQUIRE_REDIS": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.servers", "-p", "no:cacheprovider",
         "-q", "-rs", "--rootdir", str(tmp_path), str(inner)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout and "skipped" not in done.stdout, done.stdout


def test_the_package_declares_every_distribution_its_code_imports():
    """Each third-party module ``src/`` imports comes from a distribution named in
    pyproject.toml's dependencies, not only from the lock."""
    import ast
    import importlib.metadata as metadata
    import re
    import tomllib

    declared = {
        re.split(r"[\[<>=!~; ]", spec, maxsplit=1)[0].lower().replace("_", "-")
        for spec in tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"][
            "dependencies"
        ]
    }
    providers = metadata.packages_distributions()
    imported = set()
    for path in (PROJECT_ROOT / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    undeclared = {}
    for module in sorted(imported - set(sys.stdlib_module_names) - {"prodclass"}):
        distributions = {d.lower().replace("_", "-") for d in providers.get(module, [])}
        assert distributions, f"{module} is imported but no installed distribution provides it"
        if not distributions & declared:
            undeclared[module] = sorted(distributions)
    assert undeclared == {}, f"imported by src/ but not declared in pyproject.toml: {undeclared}"


LEAKY_TEST = """
import subprocess


def test_starts_a_server_and_forgets_it():
    subprocess.Popen(["sleep", "120"], start_new_session=True)
"""


def test_a_process_left_running_by_a_test_fails_the_session(tmp_path):
    inner = tmp_path / "test_leaky.py"
    inner.write_text(LEAKY_TEST)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
         "-q", "--rootdir", str(tmp_path), str(inner)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    assert "still running at the end (now killed)" in done.stdout
    assert "sleep 120" in done.stdout
