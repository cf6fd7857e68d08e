"""`prodclass tune`: hyper-parameter search for one model family (Optuna + MLflow).

Each trial is cross-validated on every labelled product (the same folds for every trial) and
is a child MLflow run of one `tune-<family>` run; the best values are merged into params.yaml
(comments and quoting kept) unless --no-write-params.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from prodclass.cli.common import (
    DataOption,
    ParamsOption,
    PreparedOption,
    console,
    prepared_folder,
    settings,
    user_errors,
)


def tune(
    trials: Annotated[int, typer.Option(min=1, help="Number of Optuna trials.")],
    model_family: Annotated[
        str | None, typer.Option(help="Model family to tune (default from params).")
    ] = None,
    data: DataOption = None,
    prepared: PreparedOption = None,
    params: ParamsOption = None,
    folds: Annotated[
        int,
        typer.Option(
            min=2,
            help="Cross-validation folds of every trial (fewer than the train stage's: a "
            "search ranks candidates; a losing trial is pruned between folds).",
        ),
    ] = 3,
    timeout: Annotated[
        float | None, typer.Option(help="Stop starting new trials after this many seconds.")
    ] = None,
    write_params: Annotated[
        bool,
        typer.Option(
            "--write-params/--no-write-params",
            help="Write the best values into params.yaml under families.<family>.",
        ),
    ] = True,
) -> None:
    """Search a family's hyper-parameters (Optuna) for the best out-of-fold weighted F1 over
    every labelled product, each trial on the same hashed folds (the prepared splits are
    ignored)."""
    from prodclass.params import load_params
    from prodclass.training.tune import check_tunable, tune_family, write_family_params

    with user_errors():
        params_file = params or settings().params_file
        pipeline_params = load_params(params_file)
        family = model_family or pipeline_params.train.model_family
        check_tunable(family)
        if data is not None and prepared is not None:
            raise ValueError("give --data or --prepared, not both")
        with prepared_folder(data, prepared, pipeline_params.split) as prepared_dir:
            result = tune_family(
                prepared_dir,
                family,
                pipeline_params.family_params(family),
                settings(),
                n_trials=trials,
                folds=folds,
                cv_seed=pipeline_params.split.seed,
                timeout=timeout,
            )
        if write_params:
            write_family_params(params_file, family, result.best_params)
    values = ", ".join(f"{k}={v}" for k, v in result.best_params.items())
    low, high = result.best_interval
    console.print(
        escape(
            f"best trial {result.best_trial} of {len(result.trials)} ({result.n_pruned} pruned): "
            f"{result.folds}-fold CV weighted F1 {result.best_value:.4f} [{low:.4f}, {high:.4f}] "
            f"on {result.n_products} products with {values}"
        )
    )
    console.print(f"MLflow parent run {result.parent_run_id} ({escape(result.tracking_uri)})")
    if write_params:
        console.print(escape(f"params written to {params_file} under families.{family}"))
    else:
        console.print("params not written (--no-write-params)")
