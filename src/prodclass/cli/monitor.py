"""`prodclass monitor ...`: drift checks, quality from feedback, live A/B tests, the monitoring
journal."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prodclass.cli.common import console, settings, user_errors, write_json

app = typer.Typer(help="Drift and quality monitoring of the serving model.")


def thresholds():
    from prodclass.monitoring.drift import DriftThresholds
    from prodclass.params import load_params

    m = load_params(settings().params_file).monitoring
    return DriftThresholds(m.p_value, m.psi, m.min_samples, m.embedding_samples, m.permutations)


@app.command()
def drift(
    since: Annotated[str, typer.Option(help="24h, 7d, 90m or an ISO time.")] = "24h",
    out: Annotated[Path, typer.Option(help="Folder for drift.json and drift.html.")] = Path(
        "reports/monitoring"
    ),
    model: Annotated[str | None, typer.Option(help="Default: PRODCLASS_MODEL_URI.")] = None,
) -> None:
    """Compare the products logged since --since with the serving model's reference profile;
    the report goes to --out, MLflow and the journal. Exit code 3 when drift is detected."""
    from prodclass.monitoring.check import NoReferenceError, parse_since, run_drift_check

    with user_errors():
        try:
            report = run_drift_check(settings(), parse_since(since), thresholds(), out, model)
        except NoReferenceError as exc:
            raise ValueError(str(exc)) from None
    drifted = ", ".join(report.get("drifted", [])) or "-"
    console.print(
        f"{report['decision']}: {report['n_current']} products, drifted: {drifted}; "
        f"report {out / 'drift.html'}"
    )
    if report["drift"]:
        raise typer.Exit(3)


@app.command()
def quality(
    days: Annotated[float, typer.Option(help="Window of reviewed predictions, in days.")] = 7.0,
) -> None:
    """Weighted and per-class F1 of reviewed predictions; written to the journal."""
    from prodclass.monitoring import journal
    from prodclass.monitoring.performance import rolling_quality

    config = settings()
    report = rolling_quality(config.db_url, days)
    summary = f"weighted F1 {report['weighted_f1']} on {report['n']} reviewed predictions"
    journal.write(config.db_url, "performance", summary, report, None)
    write_json(report, None)


@app.command("ab")
def ab_test(
    since: Annotated[
        str | None, typer.Option(help="24h, 7d, 90m or an ISO time; default: the test's start.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON.")] = False,
) -> None:
    """The live A/B test per arm: predictions, mean confidence, latency p50/p95, reviewed
    predictions and their weighted F1, and the challenger's F1 minus the champion's with a
    95 % bootstrap interval (paired in shadow mode). Promoting is the admin's decision."""
    from datetime import UTC, datetime, timedelta

    from prodclass.monitoring.ab_report import ab_report, report_lines
    from prodclass.monitoring.check import parse_since
    from prodclass.serving.ab_testing import running_test

    config = settings()
    with user_errors():
        running = running_test(config.db_url)
        test = running.to_dict() if running else None
        start = (
            parse_since(since)
            if since
            else running.started_at
            if running
            else datetime.now(UTC) - timedelta(days=7)
        )
        report = ab_report(config.db_url, start)
    if as_json:
        shown = {k: str(v) if isinstance(v, datetime) else v for k, v in (test or {}).items()}
        write_json(report | {"test": shown or None}, None)
        return
    if running is None:
        typer.echo("no A/B test is running")
    else:
        share = (
            f"{running.challenger_share:.0%} of products" if running.mode == "split" else "shadow"
        )
        typer.echo(
            f"A/B test: challenger version {running.challenger_version} ({share}) against "
            f"champion {running.champion_version}, started "
            f"{running.started_at:%Y-%m-%d %H:%M} by {running.started_by}"
        )
    typer.echo(f"predictions since {start:%Y-%m-%d %H:%M} UTC")
    if not report["arms"]:
        typer.echo("no prediction logged")
        return
    for line in report_lines(report):
        typer.echo(line)


@app.command("journal")
def show_journal(
    limit: Annotated[int, typer.Option(help="Entries, newest first.")] = 20,
    kind: Annotated[
        str | None, typer.Option(help="drift, performance, retraining, model, alert or ab.")
    ] = None,
) -> None:
    """The monitoring journal: drift checks, quality, retraining decisions, alerts."""
    from prodclass.monitoring import journal

    for entry in journal.entries(settings().db_url, limit, kind):
        version = entry.model_version or "-"
        typer.echo(
            f"{entry.created_at:%Y-%m-%d %H:%M}  {entry.kind:<11} v{version:<4} {entry.summary}"
        )
