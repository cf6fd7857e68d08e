"""Run the pipeline (ingest → validate → feedback → prepare → train → evaluate → register).

DVC decides what is stale from the data snapshot, params.yaml and the code each stage depends
on; unchanged stages are reused, so a second run does nothing but say so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REGISTRATION_REPORT = Path("reports/registration.json")


class PipelineError(RuntimeError):
    pass


def _env() -> dict[str, str]:
    # Stages call `prodclass`; make sure it is the one of this interpreter's environment.
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def dvc(*args: str, cwd: Path) -> None:
    """Run a dvc command in ``cwd``, streaming its output; raise if it fails."""
    completed = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=_env())
    if completed.returncode != 0:
        raise PipelineError(f"`dvc {' '.join(args)}` failed with exit code {completed.returncode}")


def run_pipeline(
    project_dir: Path, force: bool = False, push: bool = True, job: str = "training"
) -> dict[str, Any]:
    """Run the lifecycle (the Dagster ``training`` job, in this process: each stage is a DVC
    stage, reused when up to date), push outputs to the default DVC remote, return the
    registration."""
    from prodclass.pipelines.definitions import run_job

    result = run_job(job, project_dir, force=force)
    if not result.success:
        failed = [e.step_key for e in result.all_events if e.is_step_failure]
        raise PipelineError(f"the pipeline failed at stage {', '.join(failed) or '?'}")
    if push:
        dvc("push", "--quiet", cwd=project_dir)
    return json.loads((project_dir / REGISTRATION_REPORT).read_text())
