"""`prodclass experiment …`: compare model choices by cross-validation, with intervals."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from prodclass.cli.common import console, prepared_folder, settings, user_errors
from prodclass.timing import stopwatch

app = typer.Typer(help="Experiments: cross-validated comparisons of model families.")


def parse_overrides(params_json: str | None, assignments: list[str]) -> dict[str, Any]:
    """``--params '{"C": 1}'`` then each ``--set key=value`` (values read as YAML scalars)."""
    out: dict[str, Any] = {}
    if params_json:
        try:
            loaded = json.loads(params_json)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--params is not JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise ValueError("--params must be a JSON object")
        out |= loaded
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, not {assignment!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


@app.command("cv")
def cv(
    family: Annotated[str, typer.Option(help="Model family to cross-validate.")],
    params_json: Annotated[
        str | None, typer.Option("--params", help="JSON object overriding params.yaml.")
    ] = None,
    assignments: Annotated[
        list[str] | None, typer.Option("--set", help="key=value override (repeatable).")
    ] = None,
    reference: Annotated[
        list[str] | None,
        typer.Option(
            help="Family to compare with (params from params.yaml), or a folder holding a saved "
            "CV result (--out of an earlier run: compared without refitting). Repeatable."
        ),
    ] = None,
    folds: Annotated[int, typer.Option(min=2, help="Number of folds.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the fold hash.")] = 42,
    data: Annotated[Path | None, typer.Option(help="Raw challenge folder.")] = None,
    prepared: Annotated[Path | None, typer.Option(help="Prepared folder.")] = None,
    limit: Annotated[
        int | None, typer.Option(min=10, help="Stratified subset of about N products (speed).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Save each CV result (OOF predictions) and the plot here.")
    ] = None,
    params_file: Annotated[
        Path | None, typer.Option("--params-file", help="params.yaml (default: settings).")
    ] = None,
) -> None:
    """Cross-validate FAMILY (and references) on the same hashed folds of every labelled
    product; print weighted/macro F1 per subset with 95 % intervals and paired differences."""
    from prodclass.data.prepare import load_prepared
    from prodclass.data.split import stratified_subset
    from prodclass.params import load_params
    from prodclass.registry.tracking import configure_mlflow
    from prodclass.training.experiment import Candidate, run_experiment

    with user_errors():
        pipeline = load_params(params_file or settings().params_file)
        overrides = parse_overrides(params_json, assignments or [])
        candidate = Candidate(family, family, pipeline.family_params(family) | overrides)
        references = [reference_candidate(r, pipeline.family_params(r)) for r in reference or []]
        if any(r.name == family for r in references):
            raise ValueError("a reference family must differ from the candidate's")
        with prepared_folder(data, prepared, pipeline.split) as folder:
            products = load_prepared(folder)
        if limit is not None:
            products = stratified_subset(products, limit, seed)
        configure_mlflow(settings())
        with stopwatch() as took:
            reports = run_experiment(products, candidate, references, folds, seed, out)
    console.print(score_table(reports, folds))
    console.print(f"{len(products)} products, {folds} folds, {took.seconds:.0f} s")


def reference_candidate(value: str, params: dict[str, Any]):
    """A saved CV result when ``value`` is such a folder, else the family ``value``."""
    from prodclass.training.cv import ARRAYS_FILE, CVResult
    from prodclass.training.experiment import Candidate

    folder = Path(value)
    if (folder / ARRAYS_FILE).is_file():
        saved = CVResult.load(folder)
        name = re.sub(r"[^\w.-]", "-", f"{saved.family}-saved-{folder.resolve().name}")
        return Candidate(name, saved.family, saved.params, saved)
    return Candidate(value, value, params)


def score_table(reports: list, folds: int) -> Table:
    """Per candidate and subset: weighted F1 [95 %], macro F1 [95 %], folds mean ± sd, and the
    candidate's paired difference to each reference."""
    main = reports[0]
    table = Table(title=f"{folds}-fold cross-validation (out-of-fold, paired bootstrap 95 %)")
    for column in ("candidate", "subset", "n", "weighted F1 [95 %]", "macro F1 [95 %]", "folds"):
        table.add_column(column, justify="right" if column == "n" else "left")
    for name in main.differences:
        table.add_column(f"Δ weighted F1 vs {name}")
    for report in reports:
        for subset, s in report.scores.items():
            fold_mean, fold_sd = s.fold_weighted_f1
            diffs = [
                str(main.differences[n][subset].weighted_f1) if report is main else ""
                for n in main.differences
            ]
            table.add_row(
                report.candidate.name, subset, str(s.n), str(s.weighted_f1), str(s.macro_f1),
                f"{fold_mean:.4f} ± {fold_sd:.4f}", *diffs,
            )  # fmt: skip
    return table
