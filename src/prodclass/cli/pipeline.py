"""`prodclass pipeline run`: the main job, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.panel import Panel

from prodclass.cli.common import console

app = typer.Typer(help="Run the whole pipeline (DVC stages, cached).")


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
