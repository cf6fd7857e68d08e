"""A drift check, end to end: the serving model's reference against the products it answered
since a time; the report (JSON + HTML) goes to a folder, to MLflow and to the journal."""

from __future__ import annotations

import json
import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import select

from prodclass.data.text import clean_text, product_text
from prodclass.db.session import session_scope
from prodclass.db.tables import PredictionRecord
from prodclass.monitoring import journal
from prodclass.monitoring.drift import DriftThresholds, detect_drift
from prodclass.monitoring.features import product_features
from prodclass.monitoring.performance import rolling_quality
from prodclass.monitoring.profile import REFERENCE_DIR, ReferenceProfile, embedding_sample
from prodclass.photo_store import PhotoStore, open_photo_store
from prodclass.settings import Settings

log = logging.getLogger(__name__)

PHOTO_DOWNLOADS = 8  # photos fetched side by side from a remote photo store


class NoReferenceError(LookupError):
    """The model has no reference profile (trained before profiles existed)."""


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """ "24h", "7d", "90m" before now, or an ISO time (UTC if no zone)."""
    now = now or datetime.now(UTC)
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if value and value[-1] in units and value[:-1].replace(".", "", 1).isdigit():
        return now - timedelta(**{units[value[-1]]: float(value[:-1])})
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"--since {value!r}: use 24h, 7d, 90m or an ISO time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def logged_products(
    db_url: str, photos: PhotoStore, since: datetime, scratch: Path
) -> pd.DataFrame:
    """Products answered since ``since``: the model's input frame plus its answer. The model
    reads photos from files: those of a remote store are copied under ``scratch`` (the
    caller's, to delete once the frame is used)."""
    with session_scope(db_url) as session:
        records = session.execute(
            select(
                PredictionRecord.designation,
                PredictionRecord.description,
                PredictionRecord.image_sha256,
                PredictionRecord.prdtypecode,
                PredictionRecord.probability,
                PredictionRecord.model_version,
            ).where(PredictionRecord.created_at >= since, PredictionRecord.shadow_of.is_(None))
        ).all()

    def photo_file(sha: str | None) -> Path | None:
        return photos.local_path(sha, scratch) if sha else None

    with ThreadPoolExecutor(PHOTO_DOWNLOADS) as pool:
        files = list(pool.map(photo_file, [record.image_sha256 for record in records]))
    rows = []
    for (designation, description, _, code, probability, version), photo in zip(records, files):
        rows.append(
            {
                "text": product_text(designation or "", description or ""),
                "title": clean_text(designation or ""),
                "image_path": str(photo) if photo is not None else "",
                "prdtypecode": int(code),
                "probability": float(probability),
                "model_version": version,
            }
        )
    columns = ["text", "title", "image_path", "prdtypecode", "probability", "model_version"]
    return pd.DataFrame(rows, columns=columns)


def load_reference(model_dir: Path) -> ReferenceProfile:
    folder = model_dir / REFERENCE_DIR
    if not (folder / "profile.json").is_file():
        raise NoReferenceError(
            f"the model in {model_dir} has no reference profile: it was trained before drift "
            "monitoring existed; retrain it (`prodclass pipeline run`)"
        )
    return ReferenceProfile.load(folder)


def run_drift_check(
    settings: Settings,
    since: datetime,
    thresholds: DriftThresholds = DriftThresholds(),
    out_dir: Path | None = None,
    model_uri: str | None = None,
) -> dict[str, Any]:
    from prodclass.registry.model_registry import load_model_dir, model_folder, resolve_version
    from prodclass.registry.tracking import configure_mlflow

    configure_mlflow(settings)
    uri = model_uri or settings.model_uri
    folder = model_folder(uri)
    version = resolve_version(uri)
    reference = load_reference(folder)
    model = load_model_dir(folder)
    with tempfile.TemporaryDirectory(prefix="prodclass-drift-photos-") as scratch:
        logged = logged_products(settings.db_url, open_photo_store(settings), since, Path(scratch))
        mine = logged[logged["model_version"] == version] if version else logged
        answers = mine if len(mine) >= thresholds.min_samples else logged
        report = detect_drift(
            reference,
            product_features(logged),
            answers["prdtypecode"],
            answers["probability"],
            embedding_sample(model, logged, thresholds.embedding_samples, thresholds.seed),
            thresholds,
        )
    report |= {
        "model_uri": uri,
        "model_version": version,
        "since": since.isoformat(),
        "checked_at": datetime.now(UTC).isoformat(),
        "quality": rolling_quality(settings.db_url),
    }
    paths = write_report(report, out_dir or Path("reports/monitoring"))
    report["report_files"] = [str(p) for p in paths]
    report["mlflow_run_id"] = _log_to_mlflow(report, paths)
    summary = (
        f"{report['decision']} on {report['n_current']} products since {since:%Y-%m-%d %H:%M}"
        + (f": {', '.join(report['drifted'])}" if report.get("drifted") else "")
    )
    journal.write(settings.db_url, "drift", summary, _jsonable(report), version)
    log.info("drift check: %s", summary)
    return report


def write_report(report: dict[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "drift.json"
    json_path.write_text(json.dumps(_jsonable(report), indent=2) + "\n")
    tests = pd.DataFrame(report.get("tests", []))
    quality = report.get("quality", {})
    table = tests.to_html(index=False, float_format=lambda v: f"{v:.4g}") if len(tests) else ""
    drifted = ", ".join(report.get("drifted", [])) or "none"
    html = f"""<!doctype html><html><head><meta charset="utf-8">
<title>prodclass drift report</title><style>body{{font-family:sans-serif;margin:2em}}</style>
</head><body><h1>Drift report: {report["decision"]}</h1>
<p>Model {report.get("model_uri")} (version {report.get("model_version")}),
{report["n_current"]} products since {report.get("since")}. Drifted: {drifted}.</p>
<h2>Tests</h2>{table or "<p>none</p>"}
<h2>Quality from reviewers</h2><p>{quality.get("n", 0)} reviewed predictions, weighted F1
{quality.get("weighted_f1")}</p></body></html>
"""
    html_path = out_dir / "drift.html"
    html_path.write_text(html)
    return [json_path, html_path]


def _log_to_mlflow(report: dict[str, Any], paths: list[Path]) -> str:
    import mlflow

    with mlflow.start_run(run_name="monitor-drift") as run:
        mlflow.set_tags({"stage": "monitoring", "model_version": str(report["model_version"])})
        mlflow.log_metrics(
            {"drift": float(report["drift"]), "n_current": float(report["n_current"])}
        )
        for test in report.get("tests", []):
            name = test["name"].replace(":", "_")
            mlflow.log_metric(f"p_{name}", test["p_value"])
            if test["psi"] is not None:
                mlflow.log_metric(f"psi_{name}", test["psi"])
        for path in paths:
            mlflow.log_artifact(str(path), "monitoring")
        return run.info.run_id


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
