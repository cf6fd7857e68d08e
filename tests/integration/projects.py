"""Throwaway git + DVC copies of the project, for tests that run the real pipeline."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tests.conftest import PROJECT_ROOT

VENV_BIN = Path(sys.executable).parent
TIMEOUT = 300  # seconds, per subprocess; one full pipeline run on the sample takes about 50 s
DUMMY_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def project_env(root: Path, sample: Path) -> dict[str, str]:
    """Environment of every subprocess: the sample, a private state folder, no outside config."""
    outside = root.parent / "outside"  # config and caches that must stay out of the project
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(
            ("PRODCLASS_", "DVC_", "AWS_", "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")
        )
        and key.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env.update(DUMMY_AWS)
    env.update(
        PRODCLASS_DATA_DIR=str(sample),
        PRODCLASS_STATE_DIR=str(root / "state"),
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        # DVC: no analytics, no user/system config, a private site cache
        DVC_NO_ANALYTICS="1",
        DVC_GLOBAL_CONFIG_DIR=str(outside / "dvc-global"),
        DVC_SYSTEM_CONFIG_DIR=str(outside / "dvc-system"),
        DVC_SITE_CACHE_DIR=str(outside / "dvc-site"),
        # AWS SDKs: dummy credentials only, never the instance metadata service
        AWS_CONFIG_FILE=str(outside / "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(outside / "aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        COLUMNS="200",  # rich wraps the summary panel at 80 columns otherwise
    )
    return env


def run(args: list[str | Path], cwd: Path, env: dict[str, str]) -> str:
    """Run a command, return its merged output; fail the test with that output if it fails."""
    try:
        proc = subprocess.run(
            [str(a) for a in args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`{' '.join(map(str, args))}` took more than {TIMEOUT} s:\n{exc.output}")
    assert proc.returncode == 0, (
        f"`{' '.join(map(str, args))}` exited {proc.returncode}:\n{proc.stdout}"
    )
    return proc.stdout


def pipeline_run(project: Path, env: dict[str, str]) -> str:
    return run([VENV_BIN / "prodclass", "pipeline", "run"], project, env)


def dvc(project: Path, env: dict[str, str], *args: str) -> str:
    return run([VENV_BIN / "dvc", *args], project, env)


def make_project(root: Path, data: Path, params: dict | None = None) -> dict[str, str]:
    """A git + DVC project in ``root`` (dvc.yaml and models/dvc.yaml, params.yaml with the fast
    text family and ``params`` merged in, src/) on the data folder ``data``; returns its
    environment."""
    root.mkdir(parents=True)
    (root / "models").mkdir()
    for name in ("dvc.yaml", "models/dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(PROJECT_ROOT / name, root / name)
    # the pipeline's mechanics, not the model, are under test: the fast text family trains
    merged = yaml.safe_load((root / "params.yaml").read_text())
    merged["train"]["model_family"] = "tfidf-linear"
    merged["train"]["folds"] = 3  # cross-validation before the refit: few folds, small n-grams
    merged["families"]["tfidf-linear"].update(
        {"char_ngram_max": 3, "max_features_char": 50_000, "calibration_folds": 2}
    )
    for section, values in (params or {}).items():
        merged.setdefault(section, {}).update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))
    shutil.copytree(
        PROJECT_ROOT / "src",
        root / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
    )
    env = project_env(root, data)

    run(["git", "init", "-q"], root, env)
    run(["git", "config", "user.name", "prodclass tests"], root, env)
    run(["git", "config", "user.email", "tests@prodclass.invalid"], root, env)
    run(["git", "config", "commit.gpgsign", "false"], root, env)
    dvc(root, env, "init", "-q")
    # dvc init wrote its own .dvc/config and .dvcignore: use the project's (default remote)
    shutil.copy(PROJECT_ROOT / ".dvc" / "config", root / ".dvc" / "config")
    shutil.copy(PROJECT_ROOT / ".dvcignore", root / ".dvcignore")
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-q", "-m", "throwaway prodclass project"], root, env)

    return env
