"""Training: cross-validate a model family, refit it on every label, log to MLflow, save it."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from prodclass.data.prepare import META_FILE, load_prepared
from prodclass.models.registry import create
from prodclass.monitoring.profile import REFERENCE_DIR, build_reference
from prodclass.registry.model_registry import log_model
from prodclass.registry.tracking import configure_mlflow
from prodclass.settings import Settings
from prodclass.timing import stopwatch
from prodclass.training.cv import (
    CVResult,
    cross_validate,
    cv_report,
    inner_validation_mask,
    score,
    trains_in_epochs,
)
from prodclass.training.experiment import cv_metrics, fold_logger
from prodclass.training.latency import latency_metrics
from prodclass.training.metrics import summary

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_id: str
    model_uri: str
    model_dir: str
    family: str
    validation: dict[str, Any]
    tracking_uri: str

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> TrainResult:
        return cls(**json.loads(Path(path).read_text()))


def input_example(products: pd.DataFrame, n: int = 3) -> pd.DataFrame:
    """A few raw-looking rows for the MLflow signature (text fields and an image path)."""
    rows = products.head(n)
    return pd.DataFrame(
        {
            "designation": rows["text"].str.slice(0, 80).tolist(),
            "description": [""] * len(rows),
            "image": [""] * len(rows),
        }
    )


CV_DIR = "cv"  # inside the model folder: the CV result the model's quality comes from
CV_REPORT = "reports/cv_metrics.json"  # on the training run: the CV estimate with intervals


def refit_params(family_params: dict[str, Any], result: CVResult) -> dict[str, Any]:
    """The settings of the refit on every label: a torch family trains for the folds' mean
    early-stopping epoch (patience as long, so it does not stop on seen rows)."""
    epochs = result.refit_epochs()
    if epochs is None:
        return dict(family_params)
    return dict(family_params) | {"epochs": epochs, "patience": epochs}


def train_model(
    prepared_dir: Path,
    family: str,
    family_params: dict[str, Any],
    settings: Settings,
    out_dir: Path,
    latency: bool = True,
    folds: int = 5,
    seed: int = 42,
) -> TrainResult:
    """Cross-validate ``family`` on every labelled product of ``prepared_dir``, then refit it on
    all of them; the CV estimate is the model's reported quality (ECE out of fold).

    Why refit on everything: the shipped model should learn from every label, and held-out
    parts no longer judge it (the out-of-fold predictions do). A torch family's refit runs the
    folds' mean best epoch; its temperature is the one fitted on the out-of-fold logits.
    ``latency``: also time ``predict_proba`` (batch 1 and 32) and log it.
    """
    configure_mlflow(settings)
    products = load_prepared(prepared_dir)
    meta = json.loads((prepared_dir / META_FILE).read_text())
    resolved = create(family, family_params).params  # bad params are refused before any fit
    with mlflow.start_run(run_name=f"train-{family}") as run:
        mlflow.set_tags({"family": family, "stage": "train"})
        mlflow.log_params({"model_family": family, **resolved.model_dump()})
        mlflow.log_params(
            {
                "data_dir": meta["data_dir"],
                "manifest_sha256": meta["manifest_sha256"],
                "n_products": len(products),
                "cv_folds": folds,
                "cv_seed": seed,
            }
        )
        log.info("cross-validating %s on %d products (%d folds)", family, len(products), folds)
        result = cross_validate(products, family, family_params, folds, seed, fold_logger(family))
        report = cv_report(result)
        scores = score(result)
        mlflow.log_metrics(cv_metrics(scores) | {"cv_ece": result.ece})
        mlflow.log_dict(report, CV_REPORT)

        params = refit_params(family_params, result)
        model = create(family, params)
        val = products[inner_validation_mask(products, seed)] if trains_in_epochs(family) else None
        log.info("refitting %s on all %d products (%s)", family, len(products), params)
        with stopwatch() as fit_time:
            facts = model.fit(products, val)
        mlflow.log_metric("train_seconds", fit_time.seconds)
        if result.temperature is not None:  # the refit's own would be fitted on seen rows
            model.temperature = facts["temperature"] = result.temperature
        mlflow.log_metrics({k: float(v) for k, v in facts.items() if isinstance(v, int | float)})
        for epoch in facts.get("history", []):  # the refit's per-epoch curves (rows it learns)
            step = int(epoch["epoch"])
            mlflow.log_metrics({k: v for k, v in epoch.items() if k != "epoch"}, step=step)
        if latency and len(products):
            from prodclass.training.latency import measure_latency

            report["latency"] = measure_latency(model, products)
            mlflow.log_metrics(
                {f"refit_{k}": v for k, v in latency_metrics(report["latency"]).items()}
            )
        if out_dir.exists():
            shutil.rmtree(out_dir)
        model.save(out_dir)
        result.save(out_dir / CV_DIR)  # a registered model carries its out-of-fold predictions
        # what production inputs will be compared with (drift monitoring), inside the folder
        profile_rows = val if val is not None else products
        # its answers are the out-of-fold ones: the refit has seen every product
        oof = pd.DataFrame(result.probabilities, index=result.row_ids.astype(str))
        answers = (oof.loc[profile_rows.index.astype(str)].to_numpy(), result.classes)
        build_reference(model, products, profile_rows, answers=answers).save(
            out_dir / REFERENCE_DIR
        )
        model_uri = log_model(model, out_dir, input_example(products))
        log.info("CV weighted F1 %s", scores["all"].weighted_f1)
        return TrainResult(
            run_id=run.info.run_id,
            model_uri=model_uri,
            model_dir=str(out_dir),
            family=family,
            validation=summary(report)
            | {k: report[k] for k in ("ece", "by_modality", "cv", "latency") if k in report},
            tracking_uri=settings.tracking_uri,
        )
