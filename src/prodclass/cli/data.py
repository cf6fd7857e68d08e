"""`prodclass data …`: ingest, download, validate, prepare."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from prodclass.cli.common import (
    console,
    data_dir_or_default,
    settings,
    user_errors,
    write_json,
)
from prodclass.data.validate import ValidationReport

app = typer.Typer(help="Data: ingest, download, validate and prepare the challenge files.")

DataOpt = Annotated[
    Path | None,
    typer.Option("--data", help="Folder in the challenge layout (default: PRODCLASS_DATA_DIR)."),
]


def _print_summary(report: ValidationReport) -> None:
    table = Table(title=f"Validation of {report.data_dir} ({report.subset})")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("rows", str(report.n_rows))
    table.add_row("accepted", str(report.n_accepted))
    table.add_row("rejected", str(report.n_rejected))
    for modality, count in sorted(report.modalities.items()):
        table.add_row(f"  accepted {modality}", str(count))
    for code, count in sorted(report.issue_counts.items()):
        table.add_row(f"issue: {code}", str(count))
    console.print(table)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}")


@app.command()
def validate(
    data: DataOpt = None,
    report: Annotated[Path | None, typer.Option(help="Write the full JSON report here.")] = None,
    subset: Annotated[str, typer.Option(help="train (labelled) or test.")] = "train",
    no_images: Annotated[bool, typer.Option("--no-images", help="Skip decoding photos.")] = False,
) -> None:
    """Validate a data folder: columns, labels, ids, photos; every rejected row with its reason."""
    from prodclass.data.validate import DataValidationError, ValidationReport, validate

    folder = data_dir_or_default(data)
    try:
        result = validate(folder, subset, not no_images, settings().image_check_workers)
    except DataValidationError as exc:
        if report is not None:
            failed = ValidationReport(data_dir=str(folder), subset=subset, fatal=[str(exc)])
            failed.write(report)
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None
    _print_summary(result.report)
    if report is not None:
        result.report.write(report)
        console.print(f"report written to {report}")


@app.command()
def prepare(
    out: Annotated[Path, typer.Option(help="Output folder for products.csv and meta.json.")],
    data: DataOpt = None,
    params: Annotated[Path | None, typer.Option(help="params.yaml with a split section.")] = None,
    report: Annotated[Path | None, typer.Option(help="Also write the validation report.")] = None,
    extra_train: Annotated[
        Path | None,
        typer.Option(help="Labelled products (challenge layout) added to the train split only."),
    ] = None,
) -> None:
    """Validate, clean text and split (by a hash of each id) into a prepared folder."""
    from prodclass.data.prepare import SplitParams, prepare
    from prodclass.data.validate import validate
    from prodclass.params import load_params

    with user_errors():
        split = load_params(params or settings().params_file).split
        result = validate(data_dir_or_default(data), workers=settings().image_check_workers)
        if report is not None:
            result.report.write(report)
        extra = None
        if extra_train is not None and _has_rows(extra_train):
            extra = validate(extra_train, workers=settings().image_check_workers)
        split_params = SplitParams(split.val_size, split.test_size, split.seed)
        meta = prepare(result, out, split_params, extra)
    _print_summary(result.report)
    console.print(
        f"prepared {meta['n_products']} products into {out}: {meta['splits']}"
        f" ({meta['n_extra_train']} from reviewers' feedback)"
    )


def _has_rows(folder: Path) -> bool:
    """A challenge-layout folder with at least one labelled product."""
    from prodclass.data.layout import ChallengeLayout

    x_train = ChallengeLayout(folder).x_train
    return x_train.is_file() and len(x_train.read_text(encoding="utf-8").splitlines()) > 1


@app.command()
def ingest(
    out: Annotated[Path, typer.Option(help="Where to write the snapshot JSON.")],
    data: DataOpt = None,
) -> None:
    """Fingerprint the data folder (CSV hashes, photo listing) so later stages know what changed."""
    from prodclass.data.ingest import write_snapshot

    folder = data_dir_or_default(data)
    with user_errors():
        if not folder.is_dir():
            raise FileNotFoundError(f"data folder {folder} does not exist")
        snap = write_snapshot(folder, out)
    console.print(f"snapshot of {snap['data_dir']} written to {out}")


@app.command()
def download(
    out: Annotated[Path, typer.Option(help="Folder to create in the challenge layout.")],
    url: Annotated[
        str | None, typer.Option(help="Base URL (default: PRODCLASS_DATASET_URL).")
    ] = None,
    checksums: Annotated[
        Path | None, typer.Option(help="sha256sum-format file of expected checksums.")
    ] = None,
) -> None:
    """Download the challenge files (resumable, checksummed) and lay them out for `--data`."""
    from prodclass.data.download import DownloadError, download_dataset, read_checksums

    try:
        expected = read_checksums(checksums) if checksums else None
        manifest = download_dataset(url or settings().dataset_url, out, checksums=expected)
    except DownloadError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None
    write_json({"out": str(out), "files": manifest.get("files", manifest)}, None)
