"""FastAPI dependencies: the shared services, the caller (from the bearer token), role checks,
per-user rate limiting and database sessions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session

from prodclass.db.session import session_scope
from prodclass.serving import metrics
from prodclass.serving.api.services import Services
from prodclass.serving.security import InvalidTokenError, Principal

_bearer = OAuth2PasswordBearer(tokenUrl="token", auto_error=False)


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    """A session for the request. Routes that write commit before answering: the exit of a
    yield dependency may run after the response has gone."""
    with session_scope(services.db_url) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_principal(
    services: ServicesDep, token: Annotated[str | None, Depends(_bearer)]
) -> Principal:
    unauthorised = {"WWW-Authenticate": "Bearer"}
    if not token:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "not authenticated", unauthorised)
    try:
        principal = services.tokens.verify(token)
    except InvalidTokenError as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc), unauthorised) from None
    retry_after = services.limiter.acquire(principal.username)
    if retry_after:
        metrics.RATE_LIMITED.inc()
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"rate limit of {services.settings.api_rate_limit_per_minute} requests per minute "
            f"reached; retry in {retry_after} s",
            {"Retry-After": str(retry_after)},
        )
    return principal


def require(*roles: str) -> Callable[[Principal], Principal]:
    """A dependency that lets only ``roles`` through (403 for the others)."""

    def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if principal.role not in roles:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"role {principal.role!r} may not do this (needs {' or '.join(roles)})",
            )
        return principal

    return check


AnyUser = Annotated[Principal, Depends(require("admin", "reviewer", "client"))]
Reviewer = Annotated[Principal, Depends(require("admin", "reviewer"))]
Admin = Annotated[Principal, Depends(require("admin"))]
