"""Liveness, readiness and metrics (no authentication: probes and Prometheus call them)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from prodclass import __version__
from prodclass.db.session import DatabaseNotReadyError, check_schema
from prodclass.serving.api.deps import ServicesDep

router = APIRouter(tags=["system"])


@router.get("/health", summary="The process is up")
def health() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get("/status", summary="Liveness path kept for older clients (same as /health)")
def status_alias() -> dict[str, str]:
    return health()


@router.get(
    "/ready",
    summary="A model is loaded, the database answers and the prediction log writes",
    responses={503: {"description": "not ready; the body says what is missing"}},
)
def ready(services: ServicesDep) -> JSONResponse:
    problems: list[str] = []
    predictor = services.slot.current
    if predictor is None:
        last = services.slot.last_load
        why = f"{last.state}: {last.error}" if last and last.error else "loading"
        problems.append(f"no model loaded ({why})")
    elif endpoint := predictor.readiness_problem():  # a scoring endpoint that does not answer
        problems.append(endpoint)
    if recovery := services.watcher.recovery_problem():
        problems.append(recovery)
    try:
        check_schema(services.db_url)  # connects: a database that does not answer raises
    except DatabaseNotReadyError as exc:
        problems.append(str(exc))
    except Exception as exc:  # any driver error means "not ready", with the reason
        problems.append(f"database unavailable: {type(exc).__name__}")
    if log_problem := services.prediction_log.problem():
        problems.append(log_problem)
    body = {
        "ready": not problems,
        "problems": problems,
        "model_version": predictor.model_version if predictor else None,
        # "cache": the local copy of the last model served, the registry did not answer
        "model_source": predictor.source if predictor else None,
        "prediction_log_backlog": services.prediction_log.backlog,
    }
    code = status.HTTP_200_OK if not problems else status.HTTP_503_SERVICE_UNAVAILABLE
    return JSONResponse(body, status_code=code)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def prometheus_metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
