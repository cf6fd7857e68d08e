"""``/training/runs``: an admin starts a retraining run (the pipeline) and follows it."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from prodclass.serving.api.deps import Admin, ServicesDep
from prodclass.serving.retraining import RetrainingBusyError

router = APIRouter(prefix="/training", tags=["training"])


@router.post("/runs", status_code=status.HTTP_202_ACCEPTED, summary="Start a retraining run")
def start_run(services: ServicesDep, _: Admin) -> dict:
    try:
        return services.retrainer.start().to_dict()
    except RetrainingBusyError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except OSError as exc:  # the command is not there
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"cannot start retraining: {exc}"
        ) from None


@router.get("/runs/latest", summary="The latest retraining run, with its output's tail")
def latest_run(services: ServicesDep, _: Admin) -> dict:
    run = services.retrainer.latest
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no retraining run since the API started")
    return run.to_dict()
