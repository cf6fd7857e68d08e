"""Dagster code location of prodclass: `dagster dev -m prodclass.pipelines.definitions`.

- ``lifecycle`` assets, one per DVC stage (ingest, validate, feedback, prepare in ``dvc.yaml``;
  train, evaluate, register in ``models/dvc.yaml``). Each runs ``dvc repro --single-item
  <stage>``, so DVC still decides what is stale and versions every output; Dagster orders,
  runs, records and triggers.
- jobs: ``training`` (the lifecycle), ``retraining`` (the same, started by the sensor: the
  ``feedback`` stage brings the newly reviewed products in) and ``drift_check``.
- ``photo_caches`` assets (``photo_shards.py``): the trunk activations and OCR of each photo
  shard (8 partitions by a hash of the file name), and their ``photo_caches`` job; a backfill
  of all shards fills the caches training reads, one run per shard, spread over workers by the
  deployment's run launcher.
- ``catalogue_scoring`` assets (``catalogue_scores.py``): the whole catalogue scored with the
  serving predictor, one file per photo shard (job ``catalogue_scoring``), then joined into
  one file (job ``catalogue_scoring_merge``).
- ``nightly_drift_check`` schedule, and ``retrain_when_needed`` sensor: enough new reviewed
  labels since the last retraining, or a drift check that found drift.

`prodclass pipeline run` executes the ``training`` job in-process (no daemon, no server). To
scale out, a Dagster deployment runs this code location with the run launcher and executor of
deploy/dagster/dagster.yaml (Kubernetes or Celery); nothing here changes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
from sqlalchemy import func, select

from prodclass.pipelines.catalogue_scores import (
    CatalogueScoring,
    catalogue_scoring_assets,
    catalogue_scoring_job,
    catalogue_scoring_merge_job,
)
from prodclass.pipelines.dvc_pipeline import REGISTRATION_REPORT, PipelineError, dvc
from prodclass.pipelines.photo_shards import PhotoCaches, photo_cache_assets, photo_caches_job

# the files declaring the stages: the data stages (lock committed), then the model stages
# (lock kept by the machine)
PIPELINE_FILES = ("dvc.yaml", "models/dvc.yaml")
# stage -> the stages it reads (as in those files)
STAGES: dict[str, list[str]] = {
    "ingest": [],
    "validate": ["ingest"],
    "feedback": [],
    "prepare": ["ingest", "feedback"],
    "train": ["prepare"],
    "evaluate": ["train"],
    "register": ["evaluate"],
}
REPORTS = {
    "validate": "reports/validation.json",
    "evaluate": "reports/evaluation.json",
    "register": str(REGISTRATION_REPORT),
}


class DvcProject(dg.ConfigurableResource):
    """Where dvc.yaml lives, and whether to rerun stages that are up to date."""

    project_dir: str = "."
    force: bool = False

    def target(self, stage: str) -> str:
        """How DVC names ``stage``: bare in dvc.yaml, ``models/dvc.yaml:train`` elsewhere."""
        import yaml

        root = Path(self.project_dir)
        for name in PIPELINE_FILES:
            path = root / name
            if path.is_file() and stage in (yaml.safe_load(path.read_text()) or {}).get(
                "stages", {}
            ):
                return stage if name == "dvc.yaml" else f"{name}:{stage}"
        raise PipelineError(f"no stage {stage!r} in {' or '.join(PIPELINE_FILES)} of {root}")

    def repro(self, stage: str) -> None:
        dvc("repro", "--single-item", *(["--force"] if self.force else []), self.target(stage),
            cwd=Path(self.project_dir))  # fmt: skip


def _headline(path: Path) -> dict[str, dg.MetadataValue]:
    """A few numbers of a stage's JSON report, shown in the Dagster UI."""
    if not path.is_file():
        return {}
    report = json.loads(path.read_text())
    keys = ("n", "weighted_f1", "macro_f1", "n_accepted", "n_rejected", "version", "promoted",
            "reason")  # fmt: skip
    return {k: dg.MetadataValue.text(str(report[k])) for k in keys if k in report}


def _stage_asset(stage: str, upstream: list[str]) -> dg.AssetsDefinition:
    @dg.asset(
        name=stage,
        deps=upstream,
        group_name="lifecycle",
        description=f"DVC stage `{stage}` (reused when up to date).",
    )
    def _asset(project: DvcProject) -> dg.MaterializeResult:
        project.repro(stage)
        report = REPORTS.get(stage)
        return dg.MaterializeResult(
            metadata=_headline(Path(project.project_dir) / report) if report else {}
        )

    return _asset


lifecycle = [_stage_asset(stage, upstream) for stage, upstream in STAGES.items()]


@dg.asset(group_name="monitoring", description="Drift of logged production inputs (last day).")
def drift_report() -> dg.MaterializeResult:
    from prodclass.cli.monitor import thresholds
    from prodclass.monitoring.check import run_drift_check
    from prodclass.settings import get_settings

    report = run_drift_check(get_settings(), datetime.now(UTC) - timedelta(days=1), thresholds())
    return dg.MaterializeResult(
        metadata={
            "decision": dg.MetadataValue.text(report["decision"]),
            "drifted": dg.MetadataValue.text(", ".join(report.get("drifted", [])) or "-"),
            "n_current": dg.MetadataValue.int(int(report["n_current"])),
        }
    )


LIFECYCLE = dg.AssetSelection.groups("lifecycle")
# DVC holds one lock per project: the stages of a run go one after another, in the run's own
# process (as `prodclass pipeline run` executes them)
training_job = dg.define_asset_job(
    "training", selection=LIFECYCLE, executor_def=dg.in_process_executor
)
retraining_job = dg.define_asset_job(
    "retraining",
    selection=LIFECYCLE,
    tags={"prodclass/kind": "retraining"},
    executor_def=dg.in_process_executor,
)
drift_job = dg.define_asset_job("drift_check", selection=dg.AssetSelection.assets(drift_report))
nightly_drift_check = dg.ScheduleDefinition(
    name="nightly_drift_check", job=drift_job, cron_schedule="0 2 * * *"
)


def retraining_reason(db_url: str, min_labels: int) -> str | None:
    """Why a retraining is due (None if it is not): new reviewed labels since the last
    retraining decision, or a drift check that found drift after it."""
    from prodclass.db.tables import Feedback
    from prodclass.monitoring import journal

    last = journal.latest(db_url, "retraining")
    since = last.created_at if last is not None else datetime(1970, 1, 1, tzinfo=UTC)
    from prodclass.db.session import session_scope

    with session_scope(db_url) as session:
        labels = session.scalar(
            select(func.count()).select_from(Feedback).where(Feedback.created_at > since)
        )
    drift = journal.latest(db_url, "drift")
    if drift is not None and drift.details.get("drift") and _after(drift.created_at, since):
        return f"drift detected ({', '.join(drift.details.get('drifted', []))})"
    if labels >= min_labels:
        return f"{labels} new reviewed labels (threshold {min_labels})"
    return None


def _after(moment: datetime, since: datetime) -> bool:
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    since = since if since.tzinfo else since.replace(tzinfo=UTC)
    return moment > since


@dg.sensor(job=retraining_job, minimum_interval_seconds=600)
def retrain_when_needed(context: dg.SensorEvaluationContext):
    from prodclass.db.session import upgrade
    from prodclass.params import load_params
    from prodclass.settings import get_settings

    settings = get_settings()
    upgrade(settings.db_url)
    min_labels = load_params(settings.params_file).monitoring.retrain_min_labels
    reason = retraining_reason(settings.db_url, min_labels)
    if reason is None:
        return dg.SkipReason("no drift and too few new reviewed labels")
    stamp = datetime.now(UTC).strftime("%Y%m%d%H")
    return dg.RunRequest(run_key=f"retraining-{stamp}", tags={"prodclass/reason": reason})


defs = dg.Definitions(
    assets=[*lifecycle, drift_report, *photo_cache_assets, *catalogue_scoring_assets],
    jobs=[
        training_job,
        retraining_job,
        drift_job,
        photo_caches_job,
        catalogue_scoring_job,
        catalogue_scoring_merge_job,
    ],
    schedules=[nightly_drift_check],
    sensors=[retrain_when_needed],
    resources={
        "project": DvcProject(),
        "photo_caches": PhotoCaches(),
        "catalogue_scoring": CatalogueScoring(),
    },
)


def photo_caches() -> dg.JobDefinition:
    """The resolved ``photo_caches`` job, importable by name: ``dg.reconstructable`` needs
    this to run its steps in other processes (multiprocess executor)."""
    return defs.resolve_job_def("photo_caches")


def run_job(name: str, project_dir: Path, force: bool = False) -> dg.ExecuteInProcessResult:
    """Execute a job of this code location in this process (what the CLI does)."""
    job = defs.resolve_job_def(name)
    resources = {"project": DvcProject(project_dir=str(project_dir), force=force)}
    return job.execute_in_process(resources=resources, raise_on_error=False)
