"""FastAPI dependencies: text a URL may carry, the shared services, the caller (from the bearer
token), role checks, per-user rate limiting and database sessions."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Annotated
from urllib.parse import unquote_to_bytes

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session

from prodclass.db.session import session_scope
from prodclass.serving import metrics
from prodclass.serving.api.schemas import unstorable
from prodclass.serving.api.services import Services
from prodclass.serving.security import InvalidTokenError, Principal

_bearer = OAuth2PasswordBearer(tokenUrl="token", auto_error=False)
_PATH_PARAMETER = re.compile(r"{(\w+)(?::\w+)?}")


def _url_problem(raw: bytes) -> str | None:
    """Why a percent-encoded part of a URL is no text we can take, or None. Decoders replace
    bytes that are no UTF-8 with U+FFFD and keep a NUL: the first would look up other text than
    sent, the second is refused by PostgreSQL (a 500). So both are refused here, from the bytes
    as sent."""
    try:  # a lone surrogate (UTF-8-like bytes of U+D800) is decoded, to be named as such
        text = unquote_to_bytes(raw).decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return "is not valid UTF-8 text"
    return unstorable(text)


def _shown(raw: bytes) -> str:
    text = unquote_to_bytes(raw).decode("utf-8", "backslashreplace")
    return text.replace("\x00", "\\x00")[:80]


def storable_url(request: Request) -> None:
    """Every path segment, query parameter name and value is text that can be looked up and
    stored; else a 422 naming the parameter (run before any other dependency of every route)."""
    scope = request.scope
    raw_path = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "surrogatepass")
    template = getattr(scope.get("route"), "path_format", "").split("/")
    # aligned from the end: a proxy's root path may come first
    for back, segment in enumerate(reversed(raw_path.split(b"/")), start=1):
        if problem := _url_problem(segment):
            named = _PATH_PARAMETER.fullmatch(template[-back] if back <= len(template) else "")
            where = f"path parameter {named.group(1)}" if named else "the path"
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"{where} {problem}")
    for pair in scope.get("query_string", b"").split(b"&"):
        name, _, value = pair.replace(b"+", b" ").partition(b"=")
        if problem := _url_problem(name):
            where = f"a query parameter name ({_shown(name)})"
        elif problem := _url_problem(value):
            where = f"query parameter {_shown(name)}"
        else:
            continue
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"{where} {problem}")


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
