"""Entry point of the `prodclass` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prodclass.cli import data as data_cli
from prodclass.cli import deploy as deploy_cli
from prodclass.cli import experiment as experiment_cli
from prodclass.cli import models as models_cli
from prodclass.cli import monitor as monitor_cli
from prodclass.cli import pipeline as pipeline_cli
from prodclass.cli import predict as predict_cli
from prodclass.cli import service as service_cli
from prodclass.cli import tune as tune_cli
from prodclass.cli.common import (
    DataOption,
    ParamsOption,
    PreparedOption,
    console,
    data_dir_or_default,
    prepared_folder,
    settings,
    user_errors,
    write_json,
)

app = typer.Typer(
    help="prodclass: classify Rakuten catalogue products into their 27 product-type codes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data_cli.app, name="data")
app.add_typer(models_cli.app, name="models")
app.add_typer(pipeline_cli.app, name="pipeline")
app.add_typer(experiment_cli.app, name="experiment")
app.command()(tune_cli.tune)
app.command()(predict_cli.predict)
app.command()(service_cli.serve)
app.command()(service_cli.ui)
app.add_typer(service_cli.db_app, name="db")
app.add_typer(service_cli.users_app, name="users")
app.add_typer(service_cli.feedback_app, name="feedback")
app.add_typer(service_cli.index_app, name="index")
app.add_typer(monitor_cli.app, name="monitor")
app.add_typer(deploy_cli.app, name="deploy")


@app.callback()
def _configure() -> None:
    from prodclass.logging_setup import configure_logging

    configure_logging(settings().log_level)


@app.command()
def train(
    data: DataOption = None,
    prepared: PreparedOption = None,
    model_family: Annotated[
        str | None, typer.Option(help="Model family (default from params).")
    ] = None,
    params: ParamsOption = None,
    out: Annotated[Path, typer.Option(help="Where to save the trained model folder.")] = Path(
        "models/candidate"
    ),
    report: Annotated[
        Path | None, typer.Option(help="Write the training summary JSON here.")
    ] = None,
) -> None:
    """Cross-validate a model family on every labelled product, refit it on all of them, log
    it to MLflow (params, CV metrics, out-of-fold predictions, model) and save it."""
    from prodclass.params import load_params
    from prodclass.training.train import train_model

    with user_errors():
        pipeline_params = load_params(params or settings().params_file)
        family = model_family or pipeline_params.train.model_family
        with prepared_folder(data, prepared, pipeline_params.split) as prepared_dir:
            result = train_model(
                prepared_dir,
                family,
                pipeline_params.family_params(family),
                settings(),
                out,
                folds=pipeline_params.train.folds,
                seed=pipeline_params.split.seed,
            )
    if report is not None:
        result.write(report)
    console.print(
        f"MLflow run {result.run_id} ({result.tracking_uri}); model saved to {out}; "
        f"cross-validated weighted F1 {result.validation['cv']['scores']['all']['weighted_f1']}"
    )


@app.command()
def evaluate(
    model: Annotated[
        str, typer.Option(help="Model URI: models:/prodclass@champion, runs:/…, or a folder.")
    ],
    data: Annotated[
        Path | None, typer.Option(help="Challenge folder: every labelled row is scored.")
    ] = None,
    prepared: Annotated[
        Path | None, typer.Option(help="Prepared folder: score one split instead.")
    ] = None,
    split: Annotated[str, typer.Option(help="Split of --prepared to score.")] = "test",
    cv: Annotated[
        bool, typer.Option("--cv", help="Report the model's own out-of-fold CV estimate.")
    ] = False,
    train_report: Annotated[
        Path | None, typer.Option(help="Log the report to the MLflow run of this training.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the JSON report here (else stdout).")
    ] = None,
) -> None:
    """Score labelled products: accuracy, weighted/macro F1, per class and per modality."""
    from prodclass.registry.tracking import configure_mlflow
    from prodclass.training.evaluate import evaluate_data_dir, evaluate_prepared
    from prodclass.training.train import TrainResult

    with user_errors():
        configure_mlflow(settings())
        if cv:
            from prodclass.registry.model_registry import model_folder
            from prodclass.training.cv import CVResult, cv_report
            from prodclass.training.evaluate import log_cv_report
            from prodclass.training.train import CV_DIR

            result = CVResult.load(model_folder(model) / CV_DIR)
            report = cv_report(result) | {"model_uri": model}
            if train_report:  # the Models page's figures: confusion matrix, reliability
                log_cv_report(TrainResult.read(train_report).run_id, report, result)
        elif prepared is not None:
            run_id = TrainResult.read(train_report).run_id if train_report else None
            report = evaluate_prepared(prepared, split, model, run_id)
        else:
            report = evaluate_data_dir(
                data_dir_or_default(data), model, settings().image_check_workers
            )
    write_json(report, out)
    console.print(
        f"n={report['n']} accuracy={report['accuracy']} weighted_f1={report['weighted_f1']} "
        f"macro_f1={report['macro_f1']}" + (f" -> {out}" if out else "")
    )
