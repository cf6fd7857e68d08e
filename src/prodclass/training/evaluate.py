"""Evaluation: score labelled products with a model, overall and per modality."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prodclass.models.base import ProductClassifier
from prodclass.training.metrics import classification_metrics, summary

MODALITIES = ("text_only", "image_only", "both")


def evaluate_model(
    model: ProductClassifier, products: pd.DataFrame, model_uri: str
) -> tuple[dict[str, Any], np.ndarray]:
    """Report (overall + per modality) and the predictions, for labelled ``products``."""
    start = time.perf_counter()
    predicted = model.predict(products)
    elapsed = time.perf_counter() - start
    y_true = products["label"].astype(int).to_numpy()
    report = classification_metrics(y_true, predicted)
    report["model_uri"] = model_uri
    report["model_family"] = model.family
    report["by_modality"] = {
        m: summary(classification_metrics(y_true[mask], predicted[mask]))
        for m in MODALITIES
        if (mask := (products["modality"] == m).to_numpy()).any()
    }
    report["seconds_per_product"] = round(elapsed / max(len(products), 1), 6)
    return report, predicted


def write_report(report: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return path


def log_test_report(
    run_id: str, report: dict[str, Any], y_true: np.ndarray, y_pred: np.ndarray, workdir: Path
) -> None:
    """Attach a test report, its headline metrics and the confusion matrix to a training run."""
    import mlflow

    from prodclass.training.plots import confusion_matrix_png

    png = confusion_matrix_png(
        y_true,
        y_pred,
        workdir / "confusion_matrix.png",
        title=f"{report['model_family']} on {report.get('split', 'test')} (n={report['n']})",
    )
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"test_{k}": v for k, v in summary(report).items() if v is not None})
        for modality, numbers in report["by_modality"].items():
            mlflow.log_metric(f"test_{modality}_weighted_f1", numbers["weighted_f1"])
        mlflow.log_dict(report, "reports/test_metrics.json")
        mlflow.log_artifact(str(png), "reports")


def evaluate_prepared(
    prepared_dir: Path, split: str, model_uri: str, run_id: str | None = None
) -> dict[str, Any]:
    """Evaluate on one split of a prepared folder; optionally log it to the training run."""
    from prodclass.data.prepare import load_prepared
    from prodclass.registry.model_registry import load_classifier

    products = load_prepared(prepared_dir, split)
    model = load_classifier(model_uri)
    report, predicted = evaluate_model(model, products, model_uri)
    report["split"] = split
    if run_id:
        with tempfile.TemporaryDirectory() as tmp:
            y_true = products["label"].astype(int).to_numpy()
            log_test_report(run_id, report, y_true, predicted, Path(tmp))
    return report


def evaluate_data_dir(data_dir: Path, model_uri: str, workers: int = 2) -> dict[str, Any]:
    """Score every accepted labelled row of a challenge-layout folder (no internal split)."""
    from prodclass.data.validate import validate
    from prodclass.registry.model_registry import load_classifier

    validated = validate(data_dir, workers=workers)
    model = load_classifier(model_uri)
    report, _ = evaluate_model(model, validated.products, model_uri)
    report["data_dir"] = validated.report.data_dir
    report["n_rejected"] = validated.report.n_rejected
    report["rejected"] = validated.report.rejected
    return report
