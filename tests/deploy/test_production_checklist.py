"""The production checklist of docs/deployment.md, followed as a reader would: its blocks that
write the compose `.env` and the chart's values file run as written, the results pass
`docker-compose config` and `helm template`, and its first-administrator commands work when run
with only the environment the `api` container and the API pod get (a `docker` and a `kubectl`
stand-in run the command after `exec` with that environment and nothing of the shell's, as the
real ones do in the container)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from prodclass.db.encryption import FieldCipher
from prodclass.db.session import session_scope, upgrade
from prodclass.db.users import EMAIL_FIELD, authenticate, get_user
from tests.conftest import PROJECT_ROOT
from tests.deploy.test_compose import COMPOSE, OURS, SECRETS
from tests.deploy.test_helm import CHART, HELM

DOC = PROJECT_ROOT / "docs/deployment.md"
VENV_BIN = Path(sys.executable).parent
ADMIN_PASSWORD = "a password of mine, 2024"

# `docker compose exec [-T|-it] SERVICE CMD...` and `kubectl exec [-it] TARGET -- CMD...`: CMD
# with the environment of the service or pod (a JSON file), in a folder of its own
STAND_IN = """#!{python}
import json, os, sys
args = sys.argv[1:]
if args[0] == "compose":
    assert args[1] == "exec", args
    args = [a for a in args[2:] if a not in ("-T", "-it", "-i", "-t")]
    target, command = args[0], args[1:]
else:
    assert args[0] == "exec", args
    dash = args.index("--")
    (target,) = [a for a in args[1:dash] if not a.startswith("-")]
    command = args[dash + 1 :]
env = json.load(open({envs!r}))[target]
os.chdir({workdir!r})
os.execvpe(command[0], command, env)
"""


def checklist() -> str:
    text = DOC.read_text()
    start = text.index("## Production checklist\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def block(needle: str) -> str:
    """The one bash block of the checklist that holds ``needle``."""
    (found,) = [b for b in re.findall(r"```bash\n(.*?)```", checklist(), re.S) if needle in b]
    return found


def bash(script: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """A bash script as a reader's shell runs it: the host's environment without any of the
    deployment's secrets, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if k not in SECRETS and k != "ADMIN_PASSWORD"}
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=base | env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def stand_ins(folder: Path, environments: dict[str, dict[str, str]]) -> str:
    """`docker` and `kubectl` stand-ins in ``folder``/bin; returns a PATH that finds them
    first. Each environment gets the database and state folder of this test, and a PATH to
    prodclass (the image's)."""
    envs, workdir, bin_dir = folder / "environments.json", folder / "workdir", folder / "bin"
    workdir.mkdir()
    bin_dir.mkdir()
    db_url = f"sqlite:///{folder / 'app.db'}"
    upgrade(db_url)  # what the api container (and the chart's migrations job) does first
    local = {
        "PRODCLASS_DATABASE_URL": db_url,
        "PRODCLASS_STATE_DIR": str(folder / "state"),
        "PATH": f"{VENV_BIN}:/usr/bin:/bin",
        "HOME": str(workdir),
    }
    envs.write_text(json.dumps({name: env | local for name, env in environments.items()}))
    for name in ("docker", "kubectl"):
        shim = bin_dir / name
        shim.write_text(
            STAND_IN.format(python=sys.executable, envs=str(envs), workdir=str(workdir))
        )
        shim.chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}"


def _admins(folder: Path, keys: str, output: str) -> dict[str, str | None]:
    """The admins the commands created, each with its email decrypted by ``keys``; the
    generated password (printed) and ADMIN_PASSWORD sign in."""
    generated = dict(re.findall(r"password of (\w+): (\S+)", output))
    cipher = FieldCipher.parse(keys)
    found = {}
    with session_scope(f"sqlite:///{folder / 'app.db'}") as session:
        for name in ("alice", "bob"):
            user = get_user(session, name)
            if user is None:
                continue
            assert user.role == "admin", name
            password = generated.get(name, ADMIN_PASSWORD)
            assert authenticate(session, name, password) is not None, name
            stored = user.email_encrypted
            found[name] = stored and cipher.decrypt(stored, EMAIL_FIELD)
    return found


def _env_file(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if re.match(r"^[A-Z_]+=", line)]
    return dict(line.split("=", 1) for line in lines)


@pytest.mark.skipif(COMPOSE is None, reason="needs docker-compose (make test-deps)")
def test_the_checklists_env_passes_compose_and_its_first_admin_commands_work(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    for name in ("docker-compose.yml", ".env.example"):
        shutil.copy(PROJECT_ROOT / name, project / name)
    made = bash(block("cat >> .env"), project)
    assert made.returncode == 0, made.stderr
    written = _env_file(project / ".env")
    assert set(SECRETS) <= set(written), set(SECRETS) - set(written)

    rendered = subprocess.run(
        [COMPOSE, "config"],
        cwd=project,
        env={k: v for k, v in os.environ.items() if k not in SECRETS},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rendered.returncode == 0, rendered.stderr
    services = yaml.safe_load(rendered.stdout)["services"]
    for name in OURS:
        assert services[name]["environment"]["PRODCLASS_ENVIRONMENT"] == "production", name
    api = {k: str(v) for k, v in services["api"]["environment"].items()}
    for name in ("PRODCLASS_JWT_SECRET", "PRODCLASS_ENCRYPTION_KEYS"):
        assert api[name] == written[name], name

    path = stand_ins(tmp_path, {"api": api})
    # what the docs said before: the variable is read in the container, where it is unset
    old = 'docker compose exec api sh -c \'echo "$ADMIN_PASSWORD" | prodclass users create '
    old += "carol --role admin --password-stdin'"
    refused = bash(old, project, PATH=path, ADMIN_PASSWORD=ADMIN_PASSWORD)
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "password must have at least 8 characters" in said, said

    done = bash(block("docker compose exec"), project, PATH=path, ADMIN_PASSWORD=ADMIN_PASSWORD)
    assert done.returncode == 0, done.stdout + done.stderr
    admins = _admins(tmp_path, written["PRODCLASS_ENCRYPTION_KEYS"], done.stdout)
    assert admins == {"alice": "alice@example.org", "bob": None}


@pytest.mark.skipif(not Path(HELM).is_file(), reason="needs helm (make .venv/bin/helm)")
def test_the_checklists_values_pass_helm_and_its_first_admin_command_works(tmp_path):
    made = bash(block("prodclass-values.yaml <<"), tmp_path)
    assert made.returncode == 0, made.stderr
    values = yaml.safe_load((tmp_path / "prodclass-values.yaml").read_text())
    keys = values["secrets"]["values"]["PRODCLASS_ENCRYPTION_KEYS"]
    assert re.fullmatch(r"k1:[A-Za-z0-9+/]{43}=", keys), keys

    rendered = subprocess.run(
        [HELM, "template", "shop", str(CHART), "-f", str(tmp_path / "prodclass-values.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rendered.returncode == 0, rendered.stderr
    objects = {
        (doc["kind"], doc["metadata"]["name"]): doc
        for doc in yaml.safe_load_all(rendered.stdout)
        if doc
    }
    settings = objects[("ConfigMap", "shop-prodclass-settings")]["data"]
    secret = objects[("Secret", "shop-prodclass-secrets")]["stringData"]
    assert settings["PRODCLASS_ENVIRONMENT"] == "production"
    assert secret["PRODCLASS_ENCRYPTION_KEYS"] == keys

    command = block("kubectl exec")
    (target,) = re.findall(r"kubectl exec -it deploy/(\S+) --", command)
    assert ("Deployment", target) in objects  # the API Deployment the chart makes
    path = stand_ins(tmp_path, {f"deploy/{target}": settings | secret})
    done = bash(command, tmp_path, PATH=path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _admins(tmp_path, keys, done.stdout) == {"alice": "alice@example.org"}
