"""`prodclass predict`: score a whole challenge-layout CSV (the catalogue) into a file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prodclass.cli.common import console, data_dir_or_default, settings, user_errors


def predict(
    out: Annotated[
        Path, typer.Option(help="Output file: .csv or .parquet (the extension chooses).")
    ],
    data: Annotated[
        Path | None,
        typer.Option(help="Challenge-layout folder (default: PRODCLASS_DATA_DIR)."),
    ] = None,
    part: Annotated[
        str, typer.Option(help="Which CSV: test (X_test_update.csv) or train (X_train_update.csv).")
    ] = "test",
    model: Annotated[
        str | None, typer.Option(help="Model URI or folder (default: PRODCLASS_MODEL_URI).")
    ] = None,
    top_k: Annotated[int, typer.Option(min=1, max=27, help="Codes per product.")] = 3,
    submission: Annotated[
        bool,
        typer.Option(
            "--submission", help="Write the challenge's submission: the row id and prdtypecode."
        ),
    ] = False,
    chunk_size: Annotated[
        int, typer.Option(min=1, help="Products per chunk: memory held, work lost to a stop.")
    ] = 256,
) -> None:
    """Score every product of a challenge-layout CSV with the predictor the API uses, a chunk
    at a time, into --out. Stopped (Ctrl-C, a kill), the same command continues where it
    stopped; the file then holds each product once."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from prodclass.registry.tracking import configure_mlflow
    from prodclass.serving.catalogue_scoring import (
        Source,
        check_output,
        count_products,
        score_catalogue,
        work_folder,
    )
    from prodclass.serving.predictor import Predictor

    config = settings()
    with user_errors():
        check_output(out, submission)
        source = Source(data_dir_or_default(data), part)
        source.check()
        uri = model or config.model_uri
        if not Path(uri).is_dir():  # a registry or run URI: the tracking store is needed
            configure_mlflow(config)
        predictor = Predictor.load(uri)
        total = count_products(source)
        resuming = work_folder(out).is_dir()
        console.print(
            f"scoring {total} products of {source.csv} with {predictor.model_uri}"
            + (f" (version {predictor.model_version})" if predictor.model_version else "")
            + (f"; continuing {work_folder(out)}" if resuming else "")
        )
        columns = (
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("products", total=total)
            try:
                result = score_catalogue(
                    predictor,
                    source,
                    out,
                    top_k=top_k,
                    chunk_size=chunk_size,
                    submission=submission,
                    advance=lambda n: progress.advance(task, n),
                )
            except KeyboardInterrupt:
                progress.stop()
                console.print(
                    f"interrupted: the chunks done are kept in {work_folder(out)}; "
                    "run the same command again to continue"
                )
                raise typer.Exit(130) from None
    resumed = (
        f", {result.resumed_chunks} chunks from an earlier run" if result.resumed_chunks else ""
    )
    console.print(f"{result.products} products scored{resumed} -> {out}")
    if result.refused:
        what = "an empty prdtypecode" if submission else "the reason in its error column"
        console.print(f"[yellow]{result.refused} products refused[/]: each has {what}")
