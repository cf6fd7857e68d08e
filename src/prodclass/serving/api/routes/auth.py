"""``POST /token``: the OAuth2 password flow, answering a signed JWT."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.security import OAuth2PasswordRequestForm

from prodclass.db.users import authenticate
from prodclass.serving.api.deps import ServicesDep, SessionDep
from prodclass.serving.api.schemas import TokenOut

router = APIRouter(tags=["auth"])


@router.post("/token", response_model=TokenOut, responses={401: {"description": "bad login"}})
def token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    services: ServicesDep,
    session: SessionDep,
) -> TokenOut:
    user = authenticate(session, form.username, form.password)
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "wrong user name or password (or the account is disabled)",
            {"WWW-Authenticate": "Bearer"},
        )
    return TokenOut(
        access_token=services.tokens.issue(user.username, user.role),
        expires_in=int(services.tokens.expire.total_seconds()),
        role=user.role,
    )
