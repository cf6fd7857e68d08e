"""The Dagster instance runs are asked of, and how a job is submitted to it from a process that
only asks (an API replica): the run goes to the instance's run coordinator, which launches it
at once or queues it for the daemon, as the instance's ``dagster.yaml`` says.

The instance is the folder ``PRODCLASS_DAGSTER_HOME`` (``state_dir/dagster`` by default): its
``dagster.yaml`` when there is one (PostgreSQL storage and a queue the daemon empties when
deployed: deploy/dagster/), else SQLite files in the folder. Where that file says neither how
runs are coordinated nor how they are launched, a run starts at once, as a detached process of
this machine (``LocalProcessRunLauncher``): Dagster's defaults would queue it for a daemon and
launch it through a code server, neither of which a laptop or a lone API runs.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from dagster import DagsterInstance, DagsterRun
from dagster._core.instance.ref import InstanceRef
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget

# the code location, named as deploy/dagster/workspace.yaml names it (its module): a queued
# run is launched by the daemon from the location of that name in its own workspace
CODE_LOCATION = "prodclass.pipelines.definitions"
LAUNCHING = {"run_coordinator", "run_launcher"}  # how runs start: as dagster.yaml says, or
LAUNCH_HERE: dict[str, Any] = {  # at once, each in a detached process of this machine
    "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "DefaultRunCoordinator"},
    "run_launcher": {"module": "prodclass.pipelines.launcher", "class": "LocalProcessRunLauncher"},
}


def open_instance(home: Path) -> DagsterInstance:
    """The Dagster instance of the folder ``home`` (created if missing)."""
    home.mkdir(parents=True, exist_ok=True)
    overrides = {} if LAUNCHING & _instance_config(home).keys() else LAUNCH_HERE
    return DagsterInstance.from_ref(InstanceRef.from_dir(str(home), overrides=overrides))


def _instance_config(home: Path) -> dict[str, Any]:
    path = home / "dagster.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def submit_job(
    instance: DagsterInstance,
    job_name: str,
    run_config: Mapping[str, Any],
    tags: Mapping[str, str],
) -> DagsterRun:
    """Create a run of ``job_name`` in ``instance`` and hand it to its run coordinator; the
    run executes elsewhere (never in this process). Returns the run as submitted."""
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(executable_path=sys.executable, module_name=CODE_LOCATION),
        location_name=CODE_LOCATION,
    )
    with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as process:
        workspace = process.create_request_context()
        location = workspace.get_code_location(CODE_LOCATION)
        (repository,) = location.get_repositories().values()
        job = repository.get_full_job(job_name)
        plan = location.get_execution_plan(
            job, run_config, step_keys_to_execute=None, known_state=None, instance=instance
        ).execution_plan_snapshot
        run = instance.create_run(
            job_name=job_name,
            run_id=None,
            run_config=run_config,
            status=None,
            tags={**job.tags, **tags},
            root_run_id=None,
            parent_run_id=None,
            step_keys_to_execute=plan.step_keys_to_execute,
            execution_plan_snapshot=plan,
            job_snapshot=job.job_snapshot,
            parent_job_snapshot=job.parent_job_snapshot,
            asset_selection=None,
            asset_check_selection=None,
            resolved_op_selection=job.resolved_op_selection,
            op_selection=None,
            remote_job_origin=job.get_remote_origin(),
            job_code_origin=job.get_python_origin(),
            asset_graph=repository.asset_graph,
        )
        return instance.submit_run(run.run_id, workspace)
