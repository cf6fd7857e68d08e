"""A Dagster run launcher for one machine without a code server: each run is
``python -m dagster api execute_run`` (what Kubernetes and Docker launchers run in their
containers) as a process of its own, detached from whoever launched it.

Dagster's default launcher needs a gRPC code server; an API replica has none, and a run it
started as its child would die with it and tie training to a serving process. Here an
intermediate process starts the run in a new session and exits at once, so the run is
adopted by the system (not a child of the caller, never left as a zombie). Its pid and host
are run tags: the launcher tells a run whose process ended without a word from one still
going (``check_run_worker_health``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dagster import DagsterRun
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, RunLauncher, WorkerStatus
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import ConfigurableClass, ConfigurableClassData, serialize_value

PID_TAG = "prodclass/pid"
HOST_TAG = "prodclass/host"
# runs in the background, in a session of its own, and prints its pid for the launcher
_DETACH = (
    "import subprocess, sys\n"
    "log = open(sys.argv[1], 'ab')\n"
    "run = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log, stderr=log,"
    " start_new_session=True)\n"
    "print(run.pid)\n"
)


class LocalProcessRunLauncher(RunLauncher, ConfigurableClass):
    """Launch each run as a detached local process (one machine; runs write the shared
    storage of the instance themselves)."""

    def __init__(self, inst_data: ConfigurableClassData | None = None) -> None:
        self._inst_data = inst_data
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict:
        return {}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> LocalProcessRunLauncher:
        return cls(inst_data=inst_data)

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        if run.job_code_origin is None:
            raise ValueError(f"run {run.run_id} has no code origin to execute")
        args = ExecuteRunArgs(
            job_origin=run.job_code_origin,
            run_id=run.run_id,
            instance_ref=self._instance.get_ref(),
            set_exit_code_on_failure=True,
        )
        command = [sys.executable, "-m", "dagster", "api", "execute_run", serialize_value(args)]
        log = run_log_path(self._instance.root_directory, run.run_id)
        log.parent.mkdir(parents=True, exist_ok=True)
        detach = subprocess.run(
            [sys.executable, "-c", _DETACH, str(log), *command],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        pid = detach.stdout.strip()
        self._instance.add_run_tags(run.run_id, {PID_TAG: pid, HOST_TAG: socket.gethostname()})

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished or not _alive_here(run):
            return False
        self._instance.report_run_canceling(run)
        # the run's own session: the run, DVC and the stage it runs
        os.killpg(int(run.tags[PID_TAG]), signal.SIGTERM)
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        if PID_TAG not in run.tags or run.tags.get(HOST_TAG) != socket.gethostname():
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "launched on another host")
        if _alive_here(run):
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"the run's process (pid {run.tags[PID_TAG]}) is gone"
        )


def run_log_path(instance_root: str, run_id: str) -> Path:
    """Where a run's process writes what it prints outside its steps (start-up errors)."""
    return Path(instance_root) / "run-processes" / f"{run_id}.log"


def _alive_here(run: DagsterRun) -> bool:
    """Whether the run's process still runs on this host: where /proc tells, its pid running
    this run (a pid given to another process since does not count)."""
    try:
        pid = int(run.tags[PID_TAG])
    except (KeyError, ValueError):
        return False
    proc = Path(f"/proc/{pid}/cmdline")
    if Path("/proc/self").exists():
        try:
            return run.run_id.encode() in proc.read_bytes()
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
