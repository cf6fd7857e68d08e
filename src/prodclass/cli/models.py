"""`prodclass models …`: list, register, promote and roll back registered versions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from prodclass.cli.common import console, settings, user_errors

app = typer.Typer(help="The model registry: versions, champion alias, promotion, rollback.")


@app.command("list")
def list_models(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Registered versions, newest first, with aliases and test metrics."""
    from prodclass.registry.model_registry import list_versions
    from prodclass.registry.tracking import configure_mlflow

    configure_mlflow(settings())
    rows = list_versions(settings().registered_model_name)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"model {settings().registered_model_name}")
    for column in ("version", "aliases", "family", "weighted_f1", "macro_f1", "accuracy", "run_id"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["version"],
            ",".join(row["aliases"]),
            row["family"],
            str(row["weighted_f1"]),
            str(row["macro_f1"]),
            str(row["accuracy"]),
            row["run_id"] or "",
        )
    console.print(table if rows else "no registered versions yet")


@app.command()
def promote(version: Annotated[str, typer.Argument(help="Version to make champion.")]) -> None:
    """Make VERSION the champion (the previous one is remembered for rollback)."""
    from prodclass.registry.model_registry import promote as promote_version
    from prodclass.registry.tracking import configure_mlflow

    with user_errors():
        configure_mlflow(settings())
        previous = promote_version(settings().registered_model_name, version)
    console.print(f"version {version} is champion (was {previous})")


@app.command()
def rollback() -> None:
    """Give the champion alias back to the previous champion."""
    from prodclass.registry.model_registry import rollback as rollback_champion
    from prodclass.registry.tracking import configure_mlflow

    with user_errors():
        configure_mlflow(settings())
        current, target = rollback_champion(settings().registered_model_name)
    console.print(f"champion rolled back from version {current} to version {target}")


@app.command()
def register(
    train_report: Annotated[Path, typer.Option(help="JSON written by `prodclass train`.")],
    evaluation: Annotated[
        Path, typer.Option(help="CV report written by `prodclass evaluate --cv` (tags).")
    ],
    prepared: Annotated[
        Path | None,
        typer.Option(
            help="Prepared folder the candidate was trained on: the champion also "
            "predicts its products that it never saw, so they count in the comparison."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the decision JSON here.")] = None,
    params: Annotated[Path | None, typer.Option(help="params.yaml (promotion section).")] = None,
) -> None:
    """Register the trained model; promote it to champion only if its paired cross-validated
    gain over the champion has a 95 % interval above the margin, else make it `challenger`."""
    from prodclass.params import load_params
    from prodclass.registry.promotion import register_candidate
    from prodclass.training.train import TrainResult

    with user_errors():
        trained = TrainResult.read(train_report)
        report = json.loads(evaluation.read_text())
        policy = load_params(params or settings().params_file).promotion
        products = None
        if prepared is not None:
            from prodclass.data.prepare import load_prepared

            products = load_prepared(prepared)
        decision = register_candidate(
            trained, report, settings(), policy.min_improvement, policy.max_class_drop, products
        )
    payload = decision.to_dict() | {
        "run_id": trained.run_id,
        "tracking_uri": settings().tracking_uri,
        "model_uri": f"models:/{settings().registered_model_name}/{decision.version}",
        "evaluation_report": str(evaluation),
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(payload, indent=2) + "\n")
    console.print(
        f"registered version {decision.version}: "
        f"{'promoted to champion' if decision.promoted else 'not promoted, now challenger'} "
        f"({decision.reason})"
    )
