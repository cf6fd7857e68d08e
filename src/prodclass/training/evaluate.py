"""Evaluation: score labelled products with a model, overall and per modality."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prodclass.models.base import ProductClassifier
from prodclass.timing import stopwatch
from prodclass.training.metrics import (
    calibration_error,
    classification_metrics,
    summary,
    target_index,
)

MODALITIES = ("text_only", "image_only", "both")


@dataclass(frozen=True)
class Scores:
    """What the model said about each labelled product: every report figure derives from it."""

    labels: np.ndarray  # (N,) true prdtypecode
    probabilities: np.ndarray  # (N, C), columns in ``classes`` order
    classes: np.ndarray  # (C,) prdtypecode of each column

    @property
    def predicted(self) -> np.ndarray:
        return self.classes[self.probabilities.argmax(axis=1)]

    @property
    def targets(self) -> np.ndarray:
        """Column index of each true label (-1: a label the model does not know)."""
        return target_index(self.classes, self.labels)


def evaluate_model(
    model: ProductClassifier, products: pd.DataFrame, model_uri: str, latency: bool = False
) -> tuple[dict[str, Any], Scores]:
    """Report (overall + per modality, ECE, optionally latency) and the scores behind it.

    One ``predict_proba`` pass gives both the predictions and the calibration figures.
    """
    with stopwatch() as predict_time:
        probabilities = model.predict_proba(products)
    scores = Scores(products["label"].astype(int).to_numpy(), probabilities, model.classes_)
    y_true, predicted = scores.labels, scores.predicted
    report = classification_metrics(y_true, predicted)
    report["ece"] = round(calibration_error(probabilities, scores.classes, y_true), 4)
    report["model_uri"] = model_uri
    report["model_family"] = model.family
    report["by_modality"] = {
        m: summary(classification_metrics(y_true[mask], predicted[mask]))
        | {"ece": round(calibration_error(probabilities[mask], scores.classes, y_true[mask]), 4)}
        for m in MODALITIES
        if (mask := (products["modality"] == m).to_numpy()).any()
    }
    report["seconds_per_product"] = round(predict_time.seconds / max(len(products), 1), 6)
    if latency and len(products):
        from prodclass.training.latency import measure_latency

        report["latency"] = measure_latency(model, products)
    return report, scores


def write_report(report: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return path


def log_test_report(run_id: str, report: dict[str, Any], scores: Scores, workdir: Path) -> None:
    """Attach a test report, its headline metrics (ECE and latency included), the per-class
    table, the confusion matrix and the reliability diagram to a training run."""
    import mlflow

    from prodclass.training.latency import latency_metrics
    from prodclass.training.plots import confusion_matrix_png, reliability_diagram_png

    title = f"{report['model_family']} on {report.get('split', 'test')} (n={report['n']})"
    figures = [
        confusion_matrix_png(
            scores.labels, scores.predicted, workdir / "confusion_matrix.png", title=title
        ),
        reliability_diagram_png(
            scores.probabilities, scores.targets, workdir / "reliability_diagram.png", title=title
        ),
    ]
    per_class = pd.DataFrame.from_dict(report["per_class"], orient="index")
    per_class.index.name = "prdtypecode"
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"test_{k}": v for k, v in summary(report).items() if v is not None})
        mlflow.log_metric("test_ece", report["ece"])
        for modality, numbers in report["by_modality"].items():
            mlflow.log_metric(f"test_{modality}_weighted_f1", numbers["weighted_f1"])
        if "latency" in report:
            mlflow.log_metrics(
                {f"test_{k}": v for k, v in latency_metrics(report["latency"]).items()}
            )
        mlflow.log_dict(report, "reports/test_metrics.json")
        mlflow.log_text(per_class.to_csv(), "reports/test_per_class.csv")
        for png in figures:
            mlflow.log_artifact(str(png), "reports")


def log_cv_report(run_id: str, report: dict[str, Any], result: Any) -> None:
    """Attach a model's out-of-fold report (``training.cv.CVResult``) to its training run with
    the same figures as a test report: the refit saw every label, so these are its honest ones."""
    scores = Scores(result.labels, result.probabilities, result.classes)
    report = report | {"model_family": result.family, "split": "out-of-fold"}
    with tempfile.TemporaryDirectory() as workdir:
        log_test_report(run_id, report, scores, Path(workdir))


def evaluate_prepared(
    prepared_dir: Path,
    split: str,
    model_uri: str,
    run_id: str | None = None,
    latency: bool = True,
) -> dict[str, Any]:
    """Evaluate on one split of a prepared folder; optionally log it to the training run."""
    from prodclass.data.prepare import load_prepared
    from prodclass.registry.model_registry import load_classifier

    products = load_prepared(prepared_dir, split)
    model = load_classifier(model_uri)
    report, scores = evaluate_model(model, products, model_uri, latency=latency)
    report["split"] = split
    if run_id:
        with tempfile.TemporaryDirectory() as tmp:
            log_test_report(run_id, report, scores, Path(tmp))
    return report


def evaluate_data_dir(
    data_dir: Path, model_uri: str, workers: int = 2, latency: bool = True
) -> dict[str, Any]:
    """Score every accepted labelled row of a challenge-layout folder (no internal split)."""
    from prodclass.data.validate import validate
    from prodclass.registry.model_registry import load_classifier

    validated = validate(data_dir, workers=workers)
    model = load_classifier(model_uri)
    report, _ = evaluate_model(model, validated.products, model_uri, latency=latency)
    report["data_dir"] = validated.report.data_dir
    report["n_rejected"] = validated.report.n_rejected
    report["rejected"] = validated.report.rejected
    return report
