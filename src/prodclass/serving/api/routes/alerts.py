"""``/monitoring/alerts``: Alertmanager's webhook writes each alert it sends (firing or
resolved) to the monitoring journal; reviewers read the alerts back, firing ones first (what
the web app's monitoring page shows).

Alertmanager authenticates with a shared secret (``alert_webhook_token``, sent as a bearer
token from its ``credentials_file``); an admin's access token is taken too (to replay a
notification by hand). Alertmanager repeats a notification until it is resolved: an alert is
written once per fingerprint, status and start time."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AwareDatetime, BaseModel, Field

from prodclass.monitoring import journal
from prodclass.serving.api.deps import Reviewer, ServicesDep
from prodclass.serving.api.schemas import Storable
from prodclass.serving.security import InvalidTokenError

router = APIRouter(prefix="/monitoring", tags=["monitoring"])
_bearer = HTTPBearer(auto_error=False)
# Alertmanager's "no end yet" (Go's zero time) on firing alerts
_NO_END = datetime(1, 1, 1, tzinfo=UTC)
ALERTS_READ = 500  # journal entries read to build the list (each alert has one or two)

Text = Annotated[Storable, Field(max_length=10_000)]
Name = Annotated[Storable, Field(min_length=1, max_length=200)]


class WebhookAlert(BaseModel):
    """One alert of Alertmanager's webhook payload (version 4)."""

    status: Literal["firing", "resolved"]
    labels: dict[Name, Text] = Field(max_length=100)
    annotations: dict[Name, Text] = Field(default_factory=dict, max_length=100)
    startsAt: AwareDatetime  # noqa: N815 (Alertmanager's field names; RFC 3339, with offset)
    endsAt: AwareDatetime | None = None  # noqa: N815
    generatorURL: Annotated[Storable, Field(max_length=2000)] = ""  # noqa: N815
    fingerprint: str = Field(pattern=r"^[0-9A-Za-z]{1,64}$")


class WebhookPayload(BaseModel):
    """Alertmanager's webhook body; fields it may add later are ignored."""

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: Annotated[Storable, Field(max_length=200)] = ""
    groupKey: Annotated[Storable, Field(max_length=2000)] = ""  # noqa: N815
    externalURL: Annotated[Storable, Field(max_length=2000)] = ""  # noqa: N815
    alerts: list[WebhookAlert] = Field(min_length=1, max_length=1000)


class WebhookOut(BaseModel):
    received: int  # alerts in the notification
    recorded: int  # of those, new to the journal (the others were already written)


class AlertOut(BaseModel):
    fingerprint: str
    name: str
    status: Literal["firing", "resolved"]
    severity: str | None
    summary: str
    description: str | None
    labels: dict[str, str]
    starts_at: datetime
    ends_at: datetime | None
    received_at: datetime  # when the API was told this status
    generator_url: str


def alert_sender(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """Who sends the notification: Alertmanager (the shared secret) or an admin."""
    unauthorised = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "not authenticated", unauthorised)
    token = credentials.credentials
    shared = services.settings.alert_webhook_token
    if shared is not None and secrets.compare_digest(
        token.encode(), shared.get_secret_value().encode()
    ):
        return "alertmanager"
    try:
        principal = services.tokens.verify(token)
    except InvalidTokenError:
        if shared is None:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "the alert webhook token is not configured (PRODCLASS_ALERT_WEBHOOK_TOKEN): "
                "only an admin's access token is taken",
            ) from None
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "neither the alert webhook token nor a valid access token",
            unauthorised,
        ) from None
    if principal.role != "admin":
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"role {principal.role!r} may not do this (needs admin)"
        )
    return principal.username


def _end(alert: WebhookAlert) -> datetime | None:
    """When a resolved alert ended; None while it fires (whatever end was foreseen)."""
    if alert.status == "firing" or alert.endsAt is None or alert.endsAt <= _NO_END:
        return None
    return alert.endsAt


def _details(alert: WebhookAlert, payload: WebhookPayload, sender: str) -> dict:
    end = _end(alert)
    return {
        "status": alert.status,
        "fingerprint": alert.fingerprint,
        "labels": alert.labels,
        "annotations": alert.annotations,
        "starts_at": alert.startsAt.isoformat(),
        "ends_at": end.isoformat() if end else None,
        "generator_url": alert.generatorURL,
        "receiver": payload.receiver,
        "external_url": payload.externalURL,
        "sent_by": sender,
    }


@router.post(
    "/alerts",
    response_model=WebhookOut,
    summary="Alertmanager's webhook: record alerts in the journal",
)
def receive_alerts(
    payload: WebhookPayload,
    services: ServicesDep,
    sender: Annotated[str, Depends(alert_sender)],
) -> WebhookOut:
    """Each alert, firing or resolved, becomes a journal entry of kind ``alert``, once per
    fingerprint, status and start time (Alertmanager repeats notifications)."""
    recorded = 0
    for alert in payload.alerts:
        name = alert.labels.get("alertname", "unnamed alert")
        said = alert.annotations.get("summary") or alert.annotations.get("description") or ""
        summary = f"{name} {alert.status}" + (f": {said}" if said else "")
        key = f"alert:{alert.fingerprint}:{alert.status}:{alert.startsAt.isoformat()}"
        written = journal.write(
            services.db_url, "alert", summary, _details(alert, payload, sender), None, key
        )
        recorded += written is not None
    return WebhookOut(received=len(payload.alerts), recorded=recorded)


@router.get("/alerts", response_model=list[AlertOut], summary="Recent alerts, firing first")
def recent_alerts(
    services: ServicesDep,
    _: Reviewer,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[AlertOut]:
    """The latest status of each recent alert (one per fingerprint and start time): those
    still firing first, then the resolved ones, newest first within each."""
    latest: dict[tuple[str, str], AlertOut] = {}
    for entry in journal.entries(services.db_url, ALERTS_READ, "alert"):  # newest first
        details = entry.details
        key = (details["fingerprint"], details["starts_at"])
        if key in latest:
            continue
        annotations = details.get("annotations", {})
        latest[key] = AlertOut(
            fingerprint=details["fingerprint"],
            name=details["labels"].get("alertname", "unnamed alert"),
            status=details["status"],
            severity=details["labels"].get("severity"),
            summary=annotations.get("summary", entry.summary),
            description=annotations.get("description"),
            labels=details["labels"],
            starts_at=datetime.fromisoformat(details["starts_at"]),
            ends_at=datetime.fromisoformat(details["ends_at"]) if details["ends_at"] else None,
            received_at=entry.created_at,
            generator_url=details.get("generator_url", ""),
        )
    ordered = sorted(latest.values(), key=lambda a: a.received_at, reverse=True)
    ordered.sort(key=lambda a: a.status != "firing")  # stable: firing first, newest first
    return ordered[:limit]
