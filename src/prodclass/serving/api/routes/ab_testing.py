"""``/models/ab``: the live A/B test of the champion against a challenger version. Admins
start, change and stop it and decide from its numbers whether the challenger becomes the
champion; reviewers see the numbers. Every change is journaled with who made it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field, field_validator

from prodclass.monitoring import journal
from prodclass.monitoring.ab_report import ab_report
from prodclass.registry import model_registry as registry
from prodclass.serving.ab_testing import (
    MAX_SHARE,
    SPLIT,
    AbTestConfig,
    running_test,
    set_test,
    stop_test,
)
from prodclass.serving.api.deps import Admin, Reviewer, ServicesDep
from prodclass.serving.api.schemas import LoadStatusOut, ModelVersionRef, PromotionOut
from prodclass.serving.api.services import Services
from prodclass.serving.version_slots import VersionLoadError

router = APIRouter(prefix="/models/ab", tags=["models"])

REPORT_RESAMPLES = 1000


class AbTestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    challenger: ModelVersionRef = Field(
        default="challenger",
        description="The version tested: a number, or an alias (default: the challenger alias).",
    )
    mode: Literal["split", "shadow"] = Field(
        default="split",
        description="split: challenger_percent of the products (by a stable hash of their id) "
        "are answered by the challenger; shadow: the champion answers every product and the "
        "challenger predicts it too, in the background, only logged.",
    )
    challenger_percent: float | None = Field(
        default=None,
        description="Share of the products the challenger answers, 0 to 50 (split mode).",
    )

    @field_validator("challenger_percent")
    @classmethod
    def _share(cls, value: float | None) -> float | None:
        if value is not None and not 0 <= value <= MAX_SHARE * 100:
            raise ValueError(
                f"must be between 0 and {MAX_SHARE * 100:g} %: the champion keeps at least "
                f"half of the products (got {value:g})"
            )
        return value


class AbTestOut(BaseModel):
    challenger_version: str
    champion_version: str | None
    mode: str
    challenger_percent: float
    started_at: datetime
    started_by: str
    updated_at: datetime
    updated_by: str

    @classmethod
    def of(cls, test: AbTestConfig) -> AbTestOut:
        fields = test.to_dict()
        share = fields.pop("challenger_share")
        fields.pop("id")
        return cls(**fields, challenger_percent=round(share * 100, 4))


class AbStatusOut(BaseModel):
    test: AbTestOut | None = Field(description="The running test, or null.")
    challenger_loaded: bool = Field(
        description="This replica has the challenger loaded (until then the champion answers)."
    )
    since: datetime = Field(description="Start of the numbers: the test's start, else 7 days.")
    arms: list[dict[str, Any]] = Field(
        description="Per arm: predictions, mean_confidence, latency_ms_p50/p95, reviewed, "
        "weighted_f1 (reviewer-verified)."
    )
    differences: list[dict[str, Any]] = Field(
        description="Challenger minus champion weighted F1 with its 95 % bootstrap interval "
        "(paired in shadow mode), or the reason there is none."
    )


@router.get("", response_model=AbStatusOut, summary="The live A/B test and its per-arm numbers")
def ab_status(services: ServicesDep, _: Reviewer) -> AbStatusOut:
    return _status(services, running_test(services.db_url))


_SET_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such version or alias"},
    422: {"description": "share out of 0-50 %, the champion itself, or cannot be served"},
}


@router.put(
    "",
    response_model=AbStatusOut,
    summary="Start the A/B test, or change its share or mode",
    responses=_SET_ERRORS,
)
@router.post(
    "", response_model=AbStatusOut, summary="Same as PUT /models/ab", responses=_SET_ERRORS
)
def set_ab_test(body: AbTestIn, services: ServicesDep, admin: Admin) -> AbStatusOut:
    return _set(services, body, admin.username)


@router.delete(
    "",
    response_model=AbStatusOut,
    summary="Stop the A/B test: the champion answers everything again",
    responses={404: {"description": "no test is running"}},
)
def delete_ab_test(services: ServicesDep, admin: Admin) -> AbStatusOut:
    stopped = stop_test(services.db_url, admin.username)
    if stopped is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no A/B test is running")
    services.ab.refresh()
    summary = f"A/B test of version {stopped.challenger_version} stopped by {admin.username}"
    details = {"action": "stop", "by": admin.username, "test": stopped.to_dict()}
    _journal(services, summary, details, stopped.challenger_version)
    return _status(services, None, stopped.started_at)


@router.post(
    "/promote",
    response_model=PromotionOut,
    summary="Make the challenger of the running test the champion (the admin's decision from "
    "the live numbers) and stop the test",
    responses={409: {"description": "no test is running"}},
)
def promote_challenger(services: ServicesDep, admin: Admin) -> PromotionOut:
    test = running_test(services.db_url)
    if test is None:
        raise HTTPException(status.HTTP_409_CONFLICT, "no A/B test is running: nothing to promote")
    numbers = _status(services, test)
    name = services.settings.registered_model_name
    previous = registry.promote(name, test.challenger_version)
    stop_test(services.db_url, admin.username)
    services.ab.refresh()
    shown = "; ".join(
        f"{d['mode']}: {d['difference']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
        if d["difference"] is not None
        else f"{d['mode']}: {d['problem']}"
        for d in numbers.differences
    )
    _journal(
        services,
        f"version {test.challenger_version} promoted to champion from the live A/B test by "
        f"{admin.username} (was {previous}); challenger minus champion weighted F1: "
        f"{shown or 'no reviewed predictions'}",
        {"action": "promote", "by": admin.username, "previous_champion": previous,
         "test": test.to_dict(), "arms": numbers.arms, "differences": numbers.differences},
        test.challenger_version,
    )  # fmt: skip
    load = services.slot.request_load(f"models:/{name}/{test.challenger_version}",
                                      test.challenger_version)  # fmt: skip
    return PromotionOut(
        champion=test.challenger_version,
        previous_champion=previous,
        load=LoadStatusOut(**load.to_dict()),
    )


def _set(services: Services, body: AbTestIn, who: str) -> AbStatusOut:
    name = services.settings.registered_model_name
    version = registry.require_version(name, body.challenger)  # RegistryError: 404
    champion = services.slot.current
    champion_version = champion.model_version if champion is not None else None
    if version == champion_version:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"version {version} is the champion: an A/B test needs another version",
        )
    if body.mode == SPLIT and body.challenger_percent is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "challenger_percent (0 to 50) is needed in split mode",
        )
    try:  # served here before the test starts: a version that cannot be is refused
        services.ab.versions.get(version, wait=True)
    except VersionLoadError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    share = (body.challenger_percent or 0.0) / 100 if body.mode == SPLIT else 0.0
    test, before = set_test(services.db_url, version, body.mode, share, champion_version, who)
    services.ab.refresh()
    verb = "changed" if before is not None and before.id == test.id else "started"
    _journal(
        services,
        f"A/B test {verb} by {who}: {_describe(test)}",
        {"action": verb, "by": who, "test": test.to_dict(),
         "before": before.to_dict() if before else None},
        version,
    )  # fmt: skip
    return _status(services, test)


def _describe(test: AbTestConfig) -> str:
    if test.mode == SPLIT:
        return (
            f"version {test.challenger_version} answers {test.challenger_share:.0%} of the "
            f"products, champion {test.champion_version} the rest"
        )
    return (
        f"version {test.challenger_version} shadows champion {test.champion_version} "
        "(logged, never returned)"
    )


def _status(
    services: Services, test: AbTestConfig | None, since: datetime | None = None
) -> AbStatusOut:
    services.prediction_log.flush()  # include what was answered moments ago
    since = since or (test.started_at if test else datetime.now(UTC) - timedelta(days=7))
    report = ab_report(services.db_url, since, REPORT_RESAMPLES)
    loaded = test is not None and services.ab.versions.loaded(test.challenger_version) is not None
    return AbStatusOut(
        test=AbTestOut.of(test) if test else None,
        challenger_loaded=loaded,
        since=since,
        arms=report["arms"],
        differences=report["differences"],
    )


def _journal(services: Services, summary: str, details: dict, version: str | None) -> None:
    journal.write(services.db_url, "ab", summary, _jsonable(details), version)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value.isoformat() if isinstance(value, datetime) else value
