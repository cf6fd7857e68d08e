"""`prodclass pipeline run`: the main job, end to end; `prodclass pipeline ui`: Dagster's web UI
of the pipeline's code location."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.panel import Panel

from prodclass.cli.common import console, settings

app = typer.Typer(help="Run the whole pipeline (DVC stages, cached), or serve Dagster's UI.")


@app.command()
def run(
    project: Annotated[Path, typer.Option(help="Folder holding dvc.yaml.")] = Path("."),
    force: Annotated[bool, typer.Option(help="Rerun every stage even if up to date.")] = False,
    push: Annotated[bool, typer.Option(help="Push outputs to the default DVC remote.")] = True,
    job: Annotated[
        str, typer.Option(help="Dagster job: training, or retraining (what the sensor starts).")
    ] = "training",
) -> None:
    """ingest → validate → feedback → prepare → train → evaluate → register, reusing what is
    done (a Dagster job executed in this process)."""
    from prodclass.pipelines.dvc_pipeline import REGISTRATION_REPORT, PipelineError, run_pipeline

    if job not in ("training", "retraining"):
        console.print(f"[bold red]error:[/] unknown job {job!r}: training or retraining")
        raise typer.Exit(1)
    try:
        registration = run_pipeline(project, force=force, push=push, job=job)
    except PipelineError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None
    status = "champion" if registration["promoted"] else "not promoted"
    console.print(
        Panel.fit(
            f"MLflow run:        {registration['run_id']}\n"
            f"tracking store:    {registration['tracking_uri']}\n"
            f"model version:     {registration['model_uri']} ({status}: {registration['reason']})\n"
            f"evaluation report: {project / registration['evaluation_report']}\n"
            f"registration:      {project / REGISTRATION_REPORT}",
            title="prodclass pipeline done",
        )
    )


@app.command()
def ui(
    host: Annotated[str | None, typer.Option(help="Default: PRODCLASS_DAGSTER_UI_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Default: PRODCLASS_DAGSTER_UI_PORT.")] = None,
    read_only: Annotated[
        bool, typer.Option(help="No launching runs, no switching the schedule or sensor.")
    ] = False,
) -> None:
    """Serve Dagster's web UI for the pipeline (assets, jobs, runs, schedule, sensor) on the
    Dagster instance of PRODCLASS_DAGSTER_HOME, the one the API and the daemon use."""
    from prodclass.pipelines.webserver import serve_ui

    config = settings()
    host, port = host or config.dagster_ui_host, port or config.dagster_ui_port
    console.print(f"Dagster UI on http://{host}:{port} (instance: {config.dagster_folder})")
    serve_ui(config.dagster_folder, host, port, read_only=read_only)
