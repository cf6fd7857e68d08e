"""Retraining asked through the API: a run of the Dagster retraining job, submitted to the
Dagster instance of ``PRODCLASS_DAGSTER_HOME`` and carried out there, never in an API process.

The run id is recorded in the application database with who asked; the run's status, failure
and events are read back from the instance's run storage, which every replica (and the Dagster
daemon) shares: any replica answers for a run another one asked for.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from prodclass.db.session import session_scope
from prodclass.db.tables import RetrainingRequest

if TYPE_CHECKING:
    from dagster import DagsterInstance
    from dagster._core.storage.dagster_run import RunRecord

    from prodclass.settings import Settings

LIFECYCLE_JOBS = ("training", "retraining")  # both work in the one DVC project: one at a time
STATES = {  # Dagster's run status -> what the API and the web app say
    "NOT_STARTED": "queued",
    "QUEUED": "queued",
    "STARTING": "running",
    "STARTED": "running",
    "SUSPENDED": "running",
    "MANAGED": "running",
    "CANCELING": "running",
    "SUCCESS": "succeeded",
    "FAILURE": "failed",
    "CANCELED": "canceled",
}
TAIL_EVENTS = 40


class RetrainingBusyError(RuntimeError):
    """A lifecycle run is already queued or going."""


class RetrainingUnavailableError(RuntimeError):
    """The Dagster instance cannot be reached, or refused the run."""


@dataclass
class RetrainingRun:
    id: str  # the Dagster run id
    job: str
    requested_by: str
    requested: float
    status: str  # Dagster's run status (QUEUED, STARTED, SUCCESS, FAILURE...)
    state: str  # queued | running | succeeded | failed | canceled | unknown
    started: float | None = None
    finished: float | None = None
    failure: str | None = None  # why it failed, from the run's events
    log_tail: str = ""  # the run's last events

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Retrainer:
    """Asks the Dagster instance for retraining runs and reports on them."""

    def __init__(self, dagster_home: Path, db_url: str, job: str, pipeline_dir: Path) -> None:
        self.dagster_home = dagster_home
        self.db_url = db_url
        self.job = job
        self.pipeline_dir = pipeline_dir
        self._instance: DagsterInstance | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> Retrainer:
        return cls(
            settings.dagster_folder,
            settings.db_url,
            settings.retrain_job,
            settings.pipeline_dir.absolute(),  # the run may start in another working folder
        )

    @property
    def instance(self) -> DagsterInstance:
        """The Dagster instance, opened on first use (the API starts without it)."""
        with self._lock:
            if self._instance is None:
                from prodclass.pipelines.instance import open_instance

                try:
                    self._instance = open_instance(self.dagster_home)
                except Exception as exc:  # noqa: BLE001 (storage down, bad dagster.yaml...)
                    raise RetrainingUnavailableError(_describe(exc)) from exc
            return self._instance

    def start(self, requested_by: str) -> RetrainingRun:
        """Submit a run of the retraining job, unless a lifecycle run is queued or going."""
        from prodclass.pipelines.instance import submit_job

        instance = self.instance
        with self._lock:  # one submission at a time per replica
            for job in LIFECYCLE_JOBS:
                busy = self._unfinished(instance, job)
                if busy is not None:
                    state = STATES[busy.dagster_run.status.value]
                    raise RetrainingBusyError(
                        f"{job} run {busy.dagster_run.run_id} is {state}: one at a time"
                    )
            run_config = {
                "resources": {"project": {"config": {"project_dir": str(self.pipeline_dir)}}}
            }
            tags = {
                "prodclass/requested-by": requested_by,
                "prodclass/reason": f"asked by {requested_by} through the API",
            }
            try:
                run = submit_job(instance, self.job, run_config, tags)
            except Exception as exc:  # noqa: BLE001 (storage, code location, launcher)
                raise RetrainingUnavailableError(_describe(exc)) from exc
            with session_scope(self.db_url) as session:
                session.add(
                    RetrainingRequest(run_id=run.run_id, job=self.job, requested_by=requested_by)
                )
        return self.describe(run.run_id)

    def latest(self) -> RetrainingRun | None:
        """The last run asked through the API (by any replica), as the instance knows it."""
        with session_scope(self.db_url) as session:
            query = select(RetrainingRequest.run_id).order_by(RetrainingRequest.requested_at.desc())
            run_id = session.scalar(query.limit(1))
        return None if run_id is None else self.describe(run_id)

    def describe(self, run_id: str) -> RetrainingRun:
        """A recorded run: who asked and when (database), how it goes (Dagster)."""
        with session_scope(self.db_url) as session:
            request = session.get(RetrainingRequest, run_id)
            if request is None:
                raise KeyError(run_id)
            job, requested_by = request.job, request.requested_by
            requested = request.requested_at.timestamp()
        instance = self.instance
        try:
            record = instance.get_run_record_by_id(run_id)
            if record is not None and not record.dagster_run.is_finished:
                record = self._settle(instance, record)
        except Exception as exc:  # noqa: BLE001 (the run storage does not answer)
            raise RetrainingUnavailableError(_describe(exc)) from exc
        if record is None:
            return RetrainingRun(
                run_id, job, requested_by, requested, "UNKNOWN", "unknown",
                failure=f"the Dagster instance at {self.dagster_home} has no run {run_id}",
            )  # fmt: skip
        status = record.dagster_run.status.value
        return RetrainingRun(
            run_id,
            job,
            requested_by,
            requested,
            status,
            STATES.get(status, "unknown"),
            started=record.start_time,
            finished=record.end_time,
            failure=_failure(instance, run_id) if status == "FAILURE" else None,
            log_tail=_tail(instance, run_id),
        )

    def close(self) -> None:
        with self._lock:
            if self._instance is not None:
                self._instance.dispose()
                self._instance = None

    def _unfinished(self, instance: DagsterInstance, job: str) -> RunRecord | None:
        from dagster import RunsFilter
        from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES

        records = instance.get_run_records(
            RunsFilter(job_name=job, statuses=NOT_FINISHED_STATUSES), limit=5
        )
        for record in records:
            if not self._settle(instance, record).dagster_run.is_finished:
                return record
        return None

    @staticmethod
    def _settle(instance: DagsterInstance, record: RunRecord) -> RunRecord:
        """A run whose launcher knows its process ended without reporting (killed, out of
        memory) is marked failed, for every replica; others are left as they are."""
        from dagster._core.launcher import WorkerStatus

        run = record.dagster_run
        launcher = instance.run_launcher
        if run.status.value not in ("STARTING", "STARTED") or not (
            launcher.supports_check_run_worker_health
        ):
            return record
        health = launcher.check_run_worker_health(run)
        if health.status != WorkerStatus.FAILED:
            return record
        latest = instance.get_run_record_by_id(run.run_id)  # it may have ended meanwhile
        if latest is None or latest.dagster_run.is_finished:
            return latest or record
        instance.report_run_failed(latest.dagster_run, health.msg)
        return instance.get_run_record_by_id(run.run_id) or record


def _failure(instance: DagsterInstance, run_id: str) -> str:
    """Why a run failed: the first failing stage and the error at the root of it, else the
    run's own failure message (launch errors, a process that died)."""
    from dagster import DagsterEventType

    kinds = {DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE}
    records = instance.get_records_for_run(run_id, of_type=kinds).records
    for record in records:
        entry = record.event_log_entry
        data = entry.dagster_event.event_specific_data if entry.dagster_event else None
        error = getattr(data, "error", None)
        if entry.step_key and error is not None:
            while error.cause is not None:
                error = error.cause
            return f"stage {entry.step_key} failed: {error.message.strip()}"
    messages = [r.event_log_entry.message for r in records if r.event_log_entry.message]
    return messages[-1] if messages else "the run failed without saying why"


def _tail(instance: DagsterInstance, run_id: str) -> str:
    """The run's last events, oldest first, one line each."""
    records = instance.get_records_for_run(run_id, limit=TAIL_EVENTS, ascending=False).records
    lines = []
    for record in reversed(records):
        entry = record.event_log_entry
        moment = time.strftime("%H:%M:%S", time.gmtime(entry.timestamp))
        kind = entry.dagster_event_type.name if entry.dagster_event_type else "LOG"
        lines.append(f"{moment} {kind} {entry.message or entry.user_message}".rstrip())
    return "\n".join(lines)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]
