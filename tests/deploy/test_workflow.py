"""The GitHub Actions workflow, checked by actionlint (which must also reject a broken copy, so a
silent checker cannot pass it) and against the project it drives: the test job is `make test`
with the services .ci/run relies on, every image the Dockerfile defines is built after the
tests, and images are pushed only for version tags."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT_ROOT

WORKFLOW = PROJECT_ROOT / ".github/workflows/ci.yml"
DOCKERFILE = PROJECT_ROOT / "deploy/docker/Dockerfile"
CI_RUN = PROJECT_ROOT / ".ci/run"
ACTIONLINT = shutil.which("actionlint") or str(Path(sys.executable).parent / "actionlint")
ON_VERSION_TAG = "startsWith(github.ref, 'refs/tags/v')"


def actionlint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ACTIONLINT, "-no-color", str(path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def jobs() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]


def steps_using(job: dict, action: str) -> list[dict]:
    return [step for step in job["steps"] if step.get("uses", "").startswith(f"{action}@")]


def runs(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def image_stages() -> list[str]:
    """Stages of the Dockerfile that are images to ship: those that set their own CMD
    (``build`` and ``runtime`` only feed them)."""
    stages: list[str] = []
    has_cmd: dict[str, bool] = {}
    for line in DOCKERFILE.read_text().splitlines():
        stage = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if stage:
            stages.append(stage.group(1))
            has_cmd[stages[-1]] = False
        elif stages and re.match(r"CMD\s", line):
            has_cmd[stages[-1]] = True
    return [stage for stage in stages if has_cmd[stage]]


def test_actionlint_passes_the_workflow():
    done = actionlint(WORKFLOW)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_rejects_a_broken_copy(tmp_path):
    text = WORKFLOW.read_text()
    assert "    needs: test\n" in text
    broken = tmp_path / "ci.yml"
    broken.write_text(text.replace("    needs: test\n", "    needs: tests\n"))
    done = actionlint(broken)
    assert done.returncode != 0
    assert 'job "tests"' in done.stdout and "[job-needs]" in done.stdout, done.stdout


def test_the_test_job_is_make_test_with_the_services_ci_relies_on(jobs):
    job = jobs["test"]
    assert re.search(r"^make test$", runs(job), re.MULTILINE)
    (python,) = steps_using(job, "actions/setup-python")
    assert python["with"]["python-version"] == "3.11" and python["with"]["cache"] == "pip"
    assert job["services"]["postgres"]["image"] == "postgres:16"
    assert job["services"]["redis"]["image"].startswith("redis:")
    # every variable .ci/run exports, with the value it defaults to (the services' ports)
    exported = dict(
        re.findall(r'^export (\w+)="?(?:\$\{\w+:-)?([^}"\s]+)\}?"?$', CI_RUN.read_text(), re.M)
    )
    assert {"PRODCLASS_TEST_POSTGRES_URL", "PRODCLASS_TEST_REDIS_URL"} <= exported.keys()
    assert job["env"] == exported
    # the Debian packages come from make's own prerequisite, not from a list of the workflow's
    assert "apt-get" not in runs(job)


def test_the_image_job_builds_every_dockerfile_image_after_the_tests(jobs):
    targets = image_stages()
    assert {"api", "ui", "pipeline", "azureml"} <= set(targets)
    job = jobs["image"]
    assert job["needs"] == "test"
    assert job["strategy"]["matrix"]["target"] == targets
    (build,) = steps_using(job, "docker/build-push-action")
    assert build["with"]["file"] == "deploy/docker/Dockerfile"
    assert build["with"]["target"] == "${{ matrix.target }}"
    (meta,) = steps_using(job, "docker/metadata-action")
    assert meta["with"]["images"] == "ghcr.io/${{ github.repository }}/${{ matrix.target }}"


def test_images_are_pushed_only_for_version_tags(jobs):
    job = jobs["image"]
    (build,) = steps_using(job, "docker/build-push-action")
    assert build["with"]["push"] == f"${{{{ {ON_VERSION_TAG} }}}}"
    (login,) = steps_using(job, "docker/login-action")
    assert login["if"] == ON_VERSION_TAG
    assert "docker push" not in runs(job)
    assert all("packages" not in other.get("permissions", {}) for other in jobs.values()
               if other is not job)  # fmt: skip


def test_the_chart_job_lints_strictly_and_renders_with_the_makefiles_helm(jobs):
    commands = runs(jobs["chart"])
    assert ".venv/bin/helm" in commands and "make " in commands
    assert "helm lint --strict deploy/helm/prodclass" in commands
    assert "helm template shop deploy/helm/prodclass" in commands
