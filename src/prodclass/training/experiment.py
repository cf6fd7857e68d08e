"""A cross-validation experiment: candidates on the same folds, tracked in MLflow.

One parent run per experiment, one child run per candidate and fold (its fold scores and fit
time), and on the parent the score table, the paired differences and each candidate's
out-of-fold predictions (so a later challenger compares without refitting). The same fold
logger serves the train stage, whose CV runs inside its training run.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from prodclass.training.cv import (
    CVResult,
    FoldFacts,
    PairedDifference,
    SubsetScore,
    cross_validate,
    paired_difference,
    score,
)

CV_ARTIFACTS = "cv"  # artifact folder of a run holding its CVResult files


@dataclass(frozen=True)
class Candidate:
    """A family with its params; ``saved``: its CV result from an earlier run (not refitted)."""

    name: str
    family: str
    params: dict[str, Any]
    saved: CVResult | None = None


@dataclass
class CandidateReport:
    candidate: Candidate
    result: CVResult
    scores: dict[str, SubsetScore]
    differences: dict[str, dict[str, PairedDifference]]  # reference name -> subset -> diff


def fold_logger(candidate: str) -> Callable[[FoldFacts], None]:
    """An ``on_fold`` callback that records each fold as a child run of the active run."""

    def log_fold(facts: FoldFacts) -> None:
        with mlflow.start_run(run_name=f"{candidate} fold {facts.fold}", nested=True):
            mlflow.set_tags({"candidate": candidate, "fold": str(facts.fold), "stage": "cv"})
            mlflow.log_metrics(
                {
                    "fit_seconds": facts.fit_seconds,
                    "predict_seconds": facts.predict_seconds,
                    "n_train": facts.n_train,
                    "n_predicted": facts.n_predicted,
                    **({"best_epoch": facts.best_epoch} if facts.best_epoch is not None else {}),
                    **facts.scores,
                }
            )

    return log_fold


def cv_metrics(scores: dict[str, SubsetScore], prefix: str = "cv_") -> dict[str, float]:
    """Flat MLflow metrics: ``cv_<subset>_weighted_f1`` with ``_low``/``_high``, macro F1."""
    out: dict[str, float] = {}
    for subset, s in scores.items():
        for metric, interval in (("weighted_f1", s.weighted_f1), ("macro_f1", s.macro_f1)):
            key = f"{prefix}{subset}_{metric}"
            out |= {key: interval.mean, f"{key}_low": interval.low, f"{key}_high": interval.high}
    return out


def log_cv_result(result: CVResult, scores: dict[str, SubsetScore], name: str) -> None:
    """Scores, the per-fold facts and the OOF predictions as artifacts of the active run."""
    mlflow.log_dict({k: v.to_dict() for k, v in scores.items()}, f"{CV_ARTIFACTS}/{name}.json")
    with tempfile.TemporaryDirectory() as tmp:
        folder = result.save(Path(tmp) / name)
        mlflow.log_artifacts(str(folder), f"{CV_ARTIFACTS}/{name}")


def run_experiment(
    products: pd.DataFrame,
    candidate: Candidate,
    references: list[Candidate],
    folds: int,
    seed: int,
    out_dir: Path | None = None,
) -> list[CandidateReport]:
    """Cross-validate the candidate and each reference on the same folds in one parent run;
    the candidate gets its paired difference to each reference. Saves each CVResult under
    ``out_dir/<name>`` when given."""
    reports: list[CandidateReport] = []
    with mlflow.start_run(run_name=f"cv-{candidate.name}"):
        mlflow.set_tags({"stage": "cv", "family": candidate.family})
        mlflow.log_params(
            {"folds": folds, "seed": seed, "n_products": len(products), "family": candidate.family}
        )
        mlflow.log_dict({c.name: c.params for c in [candidate, *references]}, "cv/params.json")
        for each in [candidate, *references]:
            result = each.saved or cross_validate(
                products, each.family, each.params, folds, seed, on_fold=fold_logger(each.name)
            )
            scores = score(result)
            prefix = "cv_" if each is candidate else f"ref_{each.name}_"
            mlflow.log_metrics(cv_metrics(scores, prefix) | {f"{prefix}ece": result.ece})
            log_cv_result(result, scores, each.name)
            if out_dir is not None:
                result.save(out_dir / each.name)
            reports.append(CandidateReport(each, result, scores, {}))
        main = reports[0]
        for ref in reports[1:]:
            diff = paired_difference(main.result, ref.result, ref.candidate.name)
            main.differences[ref.candidate.name] = diff
            for subset, d in diff.items():
                key = f"diff_{ref.candidate.name}_{subset}_weighted_f1"
                mlflow.log_metrics(
                    {key: d.weighted_f1.mean, f"{key}_low": d.weighted_f1.low,
                     f"{key}_high": d.weighted_f1.high}
                )  # fmt: skip
        mlflow.log_dict(
            {
                name: {s: d.to_dict() for s, d in diff.items()}
                for name, diff in main.differences.items()
            },
            "cv/differences.json",
        )
        with tempfile.TemporaryDirectory() as tmp:
            from prodclass.training.plots import cv_intervals_png

            rows = [
                (r.candidate.name, s.subset, s.weighted_f1.mean, s.weighted_f1.low,
                 s.weighted_f1.high)
                for r in reports
                for s in r.scores.values()
            ]  # fmt: skip
            png = cv_intervals_png(rows, Path(tmp) / "cv_weighted_f1.png", "cross-validation")
            mlflow.log_artifact(str(png), CV_ARTIFACTS)
            if out_dir is not None:
                out_dir.mkdir(parents=True, exist_ok=True)
                (out_dir / png.name).write_bytes(png.read_bytes())
    return reports
