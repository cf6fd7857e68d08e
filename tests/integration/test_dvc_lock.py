"""The committed dvc.lock is what `make demo` writes on a fresh clone, so a clone stays clean and
DVC reuses, on any clone, every data stage whose inputs did not change.

A copy of the project as a clone has it (dvc.yaml, models/dvc.yaml, dvc.lock, params.yaml,
.dvcignore, .dvc/config, src/ with Python's bytecode beside it), the sample at the default
PRODCLASS_DATA_DIR (../shared/data/rakuten_sample, relative to the clone), runs the cheap
stages (ingest, feedback): the lock comes out byte for byte as committed; and DVC finds every
input of validate and prepare (the snapshot, src/prodclass/data, the reviewed products, the
split parameters) as the lock records them, only their outputs missing."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from tests.conftest import PROJECT_ROOT
from tests.integration.projects import dvc, project_env, run

pytestmark = pytest.mark.slow

FILES = ("dvc.yaml", "models/dvc.yaml", "dvc.lock", "params.yaml", ".dvcignore", ".gitignore")
REFRESH = (
    "dvc.lock is not what a fresh clone writes: run `dvc repro` in the project's root with "
    "PRODCLASS_DATA_DIR unset (the sample at ../shared/data/rakuten_sample) and commit dvc.lock"
)


def _clone(root: Path, sample: Path) -> tuple[Path, dict[str, str]]:
    main = root / "main"
    (main / "models").mkdir(parents=True)
    (main / ".dvc").mkdir()
    for name in FILES:
        shutil.copy(PROJECT_ROOT / name, main / name)
    for name in ("config", ".gitignore"):
        shutil.copy(PROJECT_ROOT / ".dvc" / name, main / ".dvc" / name)
    shutil.copytree(
        PROJECT_ROOT / "src",
        main / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
    )
    (root / "shared" / "data").mkdir(parents=True)
    (root / "shared" / "data" / "rakuten_sample").symlink_to(sample)
    env = project_env(main, sample)
    for name in ("PRODCLASS_DATA_DIR", "PRODCLASS_STATE_DIR"):  # the defaults, as a clone has
        env.pop(name)
    # bytecode of another interpreter beside the code the stages depend on: not hashed
    pycache = main / "src" / "prodclass" / "data" / "__pycache__"
    pycache.mkdir()
    (pycache / f"ingest.cpython-{sys.version_info.major}{sys.version_info.minor}.pyc").write_bytes(
        os.urandom(64)
    )
    return main, env


def test_the_committed_lock_is_what_a_fresh_clone_writes(sample, tmp_path):
    main, env = _clone(tmp_path, sample)
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "a clone"]):
        run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", *command], main, env)
    committed = (main / "dvc.lock").read_bytes()
    assert set(yaml.safe_load(committed)["stages"]) == {"ingest", "validate", "feedback", "prepare"}

    dvc(main, env, "repro", "--single-item", "ingest")
    dvc(main, env, "repro", "--single-item", "feedback")
    snapshot = json.loads((main / "data" / "snapshot.json").read_text())
    assert snapshot["data_dir"] == "../shared/data/rakuten_sample"  # as given: no machine path
    assert (main / "dvc.lock").read_bytes() == committed, REFRESH

    status = json.loads(dvc(main, env, "status", "--json", "validate", "prepare"))
    assert set(status) == {"validate", "prepare"}, status  # their outputs are missing...
    for stage, changes in status.items():
        for change in changes:
            assert set(change) == {"changed outs"}, (stage, change, REFRESH)  # ...nothing else
            missing = set(change["changed outs"].values())
            assert missing <= {"deleted", "not in cache"}, (stage, change)

    assert run(["git", "status", "--porcelain"], main, env) == ""  # the clone stays clean
