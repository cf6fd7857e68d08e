"""Training: fit a model family on the train split, log everything to MLflow, save the model."""

from __future__ import annotations

import json
import logging
import shutil
import time
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
from prodclass.training.evaluate import evaluate_model
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


def train_model(
    prepared_dir: Path,
    family: str,
    family_params: dict[str, Any],
    settings: Settings,
    out_dir: Path,
    latency: bool = True,
) -> TrainResult:
    """Train ``family`` on the train split of ``prepared_dir``; validate on the val split.

    ``latency``: also time ``predict_proba`` on validation rows (batch 1 and 32) and log it.
    """
    configure_mlflow(settings)
    train = load_prepared(prepared_dir, "train")
    val = load_prepared(prepared_dir, "val")
    meta = json.loads((prepared_dir / META_FILE).read_text())
    model = create(family, family_params)
    with mlflow.start_run(run_name=f"train-{family}") as run:
        mlflow.set_tags({"family": family, "stage": "train"})
        mlflow.log_params({"model_family": family, **model.params.model_dump()})
        mlflow.log_params({f"split_{k}": v for k, v in meta["split_params"].items()})
        mlflow.log_params(
            {
                "data_dir": meta["data_dir"],
                "manifest_sha256": meta["manifest_sha256"],
                "n_train": len(train),
                "n_val": len(val),
            }
        )
        log.info("training %s on %d products (%d for validation)", family, len(train), len(val))
        start = time.perf_counter()
        facts = model.fit(train, val)
        mlflow.log_metric("train_seconds", time.perf_counter() - start)
        mlflow.log_metrics({k: float(v) for k, v in facts.items() if isinstance(v, int | float)})
        for epoch in facts.get("history", []):  # per-epoch curves, when the family has epochs
            step = int(epoch["epoch"])
            mlflow.log_metrics({k: v for k, v in epoch.items() if k != "epoch"}, step=step)
        validation, _ = evaluate_model(
            model, val, model_uri=f"runs:/{run.info.run_id}/model", latency=latency
        )
        mlflow.log_metrics({f"val_{k}": v for k, v in summary(validation).items() if v is not None})
        mlflow.log_metric("val_ece", validation["ece"])
        if "latency" in validation:
            mlflow.log_metrics(
                {f"val_{k}": v for k, v in latency_metrics(validation["latency"]).items()}
            )
        for modality, numbers in validation["by_modality"].items():
            mlflow.log_metric(f"val_{modality}_weighted_f1", numbers["weighted_f1"])
        mlflow.log_dict(validation, "reports/validation_metrics.json")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        model.save(out_dir)
        # what production inputs will be compared with (drift monitoring), inside the folder
        build_reference(model, train, val).save(out_dir / REFERENCE_DIR)
        model_uri = log_model(model, out_dir, input_example(train))
        log.info("validation weighted F1 %.4f", validation["weighted_f1"])
        return TrainResult(
            run_id=run.info.run_id,
            model_uri=model_uri,
            model_dir=str(out_dir),
            family=family,
            validation=summary(validation)
            | {k: validation[k] for k in ("ece", "by_modality", "latency") if k in validation},
            tracking_uri=settings.tracking_uri,
        )
