"""``/models``: registered versions, the one serving, hot loads, promotion and rollback.

Loading is asynchronous: ``POST /models/{version}/load`` answers 202 at once and the version
serves when it has loaded and passed a smoke prediction (``GET /models/current`` shows where
it is). ``/models/info`` and ``/models/load/{version}`` are aliases kept for clients of the
older API.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Response, status
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from prodclass.registry import model_registry as registry
from prodclass.registry.promotion import PROMOTION_REPORT
from prodclass.serving.api.deps import Admin, AnyUser, ServicesDep
from prodclass.serving.api.routes.predict import model_ref
from prodclass.serving.api.schemas import (
    CurrentModelOut,
    LoadStatusOut,
    ModelVersionOut,
    PromotionOut,
)
from prodclass.serving.api.services import Services
from prodclass.serving.remote_predictor import EndpointSlot
from prodclass.training.train import CV_REPORT

router = APIRouter(prefix="/models", tags=["models"])


@router.get("", response_model=list[ModelVersionOut], summary="Registered versions, newest first")
def list_models(services: ServicesDep, _: AnyUser) -> list[ModelVersionOut]:
    return [ModelVersionOut(**row) for row in registry.list_versions(_name(services))]


@router.get(
    "/info",
    response_model=list[ModelVersionOut],
    summary="Alias of GET /models, kept for clients of the older API",
)
def models_info(services: ServicesDep, user: AnyUser) -> list[ModelVersionOut]:
    return list_models(services, user)


@router.get("/current", response_model=CurrentModelOut, summary="The version serving now")
def current(services: ServicesDep, _: AnyUser) -> CurrentModelOut:
    predictor = services.slot.current
    serving = model_ref(services, predictor) if predictor is not None else None
    last = services.slot.last_load
    return CurrentModelOut(
        serving=serving, last_load=LoadStatusOut(**last.to_dict()) if last else None
    )


@router.post(
    "/{version}/load",
    response_model=LoadStatusOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Load a version in the background and swap it in when it answers",
    responses={404: {"description": "no such version"}, 409: {"description": "a load is running"}},
)
def load(version: str, services: ServicesDep, _: Admin) -> LoadStatusOut:
    return _start_load(services, version)


@router.post(
    "/load/{version}",
    response_model=LoadStatusOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Alias of POST /models/{version}/load, kept for clients of the older API",
)
def load_alias(version: str, services: ServicesDep, _: Admin) -> LoadStatusOut:
    return _start_load(services, version)


@router.get(
    "/{version}/report",
    summary="The version's evaluation report (out of fold when cross-validated), per class and "
    "per modality",
)
def report(version: str, services: ServicesDep, _: AnyUser) -> dict:
    _check_version(services, version)
    path = registry.version_artifact(_name(services), version, "reports/test_metrics.json")
    return json.loads(path.read_text())


@router.get(
    "/{version}/evidence",
    summary="The version's cross-validated quality (per subset, 95 % intervals) and the "
    "promotion decision taken when it was registered (paired difference, per-class changes)",
)
def evidence(version: str, services: ServicesDep, _: AnyUser) -> dict:
    _check_version(services, version)
    name = _name(services)
    cv = json.loads(registry.version_artifact(name, version, CV_REPORT).read_text())
    try:
        decision = json.loads(
            registry.version_artifact(name, version, PROMOTION_REPORT).read_text()
        )
    except registry.RegistryError:  # promoted by hand, or registered before this record
        decision = None
    return {"version": version, "cv": cv.get("cv"), "promotion": decision}


@router.get(
    "/{version}/confusion-matrix",
    summary="The version's confusion matrix on its out-of-fold predictions (PNG)",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def confusion_matrix(version: str, services: ServicesDep, _: AnyUser) -> Response:
    _check_version(services, version)
    path = registry.version_artifact(_name(services), version, "reports/confusion_matrix.png")
    return Response(path.read_bytes(), media_type="image/png")


@router.post(
    "/{version}/promote",
    response_model=PromotionOut,
    summary="Make a version the champion and serve it",
)
def promote(version: str, services: ServicesDep, _: Admin) -> PromotionOut:
    _check_version(services, version)
    _check_served_here(services, f"version {version}")
    previous = registry.promote(_name(services), version)
    return PromotionOut(
        champion=version, previous_champion=previous, load=_start_load(services, version)
    )


@router.post(
    "/rollback",
    response_model=PromotionOut,
    summary="Give the champion alias back to the previous champion and serve it",
)
def rollback(services: ServicesDep, _: Admin) -> PromotionOut:
    _check_served_here(services, "the previous champion")
    before, after = registry.rollback(_name(services))
    return PromotionOut(champion=after, previous_champion=before, load=_start_load(services, after))


def _name(services: Services) -> str:
    return services.settings.registered_model_name


def _check_version(services: Services, version: str) -> None:
    if not version.isdigit():
        raise registry.RegistryError(f"model version must be a number, not {version!r}")
    try:
        MlflowClient().get_model_version(_name(services), version)
    except MlflowException:
        raise registry.RegistryError(f"model {_name(services)} has no version {version}") from None


def _check_served_here(services: Services, what: str) -> None:
    """Before the alias moves: an API in front of a scoring endpoint serves no version (409)."""
    if isinstance(services.slot, EndpointSlot):
        raise services.slot.no_loads(what)


def _start_load(services: Services, version: str) -> LoadStatusOut:
    _check_version(services, version)
    status_ = services.slot.request_load(f"models:/{_name(services)}/{version}", version)
    return LoadStatusOut(**status_.to_dict())
