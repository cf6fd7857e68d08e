"""Dagster's web UI for the prodclass code location, on the instance of
``PRODCLASS_DAGSTER_HOME`` (``open_instance``: the runs, schedule and sensor state the API and
the daemon see, and runs the UI launches start the way the API's do).

The code location is served by a code server of its own (a child process, as
``dagster-webserver -m`` does), so the UI's *Reload* picks up edited definitions and a crash
in the project's code leaves the UI up. SIGTERM (a supervisor, ``docker stop``) stops like
Ctrl-C: the server finishes its requests, then the code server is shut down with it.
"""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path

from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import ModuleTarget
from dagster._utils.interrupts import setup_interrupt_handlers
from dagster_webserver.cli import (
    DEFAULT_DB_STATEMENT_TIMEOUT,
    DEFAULT_POOL_MAX_OVERFLOW,
    DEFAULT_POOL_RECYCLE,
    host_dagster_ui_with_workspace_process_context,
)
from dagster_webserver.version import __version__

from prodclass.pipelines.instance import CODE_LOCATION, open_instance


def serve_ui(home: Path, host: str, port: int, read_only: bool = False) -> None:
    """Serve the UI on ``host:port`` until the process is interrupted (SIGINT / SIGTERM)."""
    target = ModuleTarget(
        module_name=CODE_LOCATION,
        attribute=None,
        working_directory=None,
        location_name=CODE_LOCATION,
    )
    # uvicorn re-raises the signal it stopped on once it is done: SIGTERM then unwinds like
    # SIGINT (KeyboardInterrupt), through the exits that stop the code server
    setup_interrupt_handlers()
    with suppress(KeyboardInterrupt), open_instance(home) as instance:
        # a long-lived server: statement timeout and pool recycling, as dagster-webserver sets
        instance.optimize_for_webserver(
            DEFAULT_DB_STATEMENT_TIMEOUT, DEFAULT_POOL_RECYCLE, DEFAULT_POOL_MAX_OVERFLOW
        )
        with WorkspaceProcessContext(
            instance, target, version=__version__, read_only=read_only
        ) as workspace:
            host_dagster_ui_with_workspace_process_context(workspace, host, port, "", "warning")
