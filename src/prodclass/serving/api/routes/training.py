"""``/training/runs``: an admin asks Dagster for a retraining run and follows it (any replica
answers: the run's status comes from the Dagster instance they share)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from prodclass.serving.api.deps import Admin, ServicesDep
from prodclass.serving.retraining import RetrainingBusyError, RetrainingUnavailableError

router = APIRouter(prefix="/training", tags=["training"])


@router.post("/runs", status_code=status.HTTP_202_ACCEPTED, summary="Start a retraining run")
def start_run(services: ServicesDep, admin: Admin) -> dict:
    """Submit a run of the retraining job to the Dagster instance; it runs there (a process of
    its own, or the daemon's launcher), never in the API."""
    try:
        return services.retrainer.start(admin.username).to_dict()
    except RetrainingBusyError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except RetrainingUnavailableError as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"cannot start retraining: {exc}"
        ) from None


@router.get("/runs/latest", summary="The latest retraining run asked through the API")
def latest_run(services: ServicesDep, _: Admin) -> dict:
    """Its Dagster status, failure reason and last events, whichever replica asked for it."""
    try:
        run = services.retrainer.latest()
    except RetrainingUnavailableError as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"cannot read retraining runs: {exc}"
        ) from None
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no retraining run asked through the API")
    return run.to_dict()
