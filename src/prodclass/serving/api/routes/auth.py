"""``POST /token``: the OAuth2 password flow, answering a signed JWT; ``POST /token/revoke``:
sign out (the token stops working in every API process).

A wrong password, an unknown user and a disabled account get the same answer, in about the
same time; repeated failures lock the user name (and the client address) for a while.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordRequestForm

from prodclass.db.users import authenticate
from prodclass.serving import metrics
from prodclass.serving.api.deps import AnyUser, ServicesDep, SessionDep
from prodclass.serving.api.schemas import TokenOut, unstorable

router = APIRouter(tags=["auth"])


@router.post(
    "/token",
    response_model=TokenOut,
    responses={
        401: {"description": "bad login"},
        429: {"description": "too many failed sign-ins; Retry-After says when to try again"},
    },
)
def token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    request: Request,
    services: ServicesDep,
    session: SessionDep,
) -> TokenOut:
    for field, text in (("username", form.username), ("password", form.password)):
        if problem := unstorable(text):  # no account holds it; the database refuses a NUL
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"{field} {problem}")
    throttle = services.login_throttle
    address = request.client.host if request.client else "unknown"
    wait = throttle.retry_after(form.username, address)
    if wait:
        metrics.LOGIN_LOCKED.inc()
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many failed sign-ins; try again in {wait} s",
            {"Retry-After": str(wait)},
        )
    user = authenticate(session, form.username, form.password)
    if user is None:
        throttle.failed(form.username, address)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "wrong user name or password (or the account is disabled)",
            {"WWW-Authenticate": "Bearer"},
        )
    throttle.succeeded(form.username)
    return TokenOut(
        access_token=services.tokens.issue(user.username, user.role),
        expires_in=services.tokens.expire_seconds,
        role=user.role,
    )


@router.post(
    "/token/revoke",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Sign out: the token used for this call stops working",
)
def revoke(principal: AnyUser, services: ServicesDep) -> None:
    services.revocations.revoke(principal)
