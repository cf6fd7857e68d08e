"""``/users``: accounts and roles (admin only, except ``/users/me``)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from prodclass.db import users as accounts
from prodclass.serving.api.deps import Admin, AnyUser, ServicesDep, SessionDep
from prodclass.serving.api.schemas import UserIn, UserOut, UserPatch

router = APIRouter(prefix="/users", tags=["users"])


@router.get("/me", response_model=UserOut)
def me(principal: AnyUser, session: SessionDep) -> UserOut:
    user = accounts.get_user(session, principal.username)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "this account no longer exists")
    return UserOut.of(user)


@router.get("", response_model=list[UserOut])
def list_users(_: Admin, session: SessionDep) -> list[UserOut]:
    return [UserOut.of(u) for u in accounts.list_users(session)]


@router.post("", response_model=UserOut, status_code=status.HTTP_201_CREATED)
def create_user(body: UserIn, _: Admin, session: SessionDep) -> UserOut:
    user = accounts.create_user(session, body.username, body.password, body.role, body.email)
    session.commit()  # before answering: the client may log in as this user at once
    return UserOut.of(user)


@router.get("/{username}", response_model=UserOut)
def get_user(username: str, _: Admin, session: SessionDep) -> UserOut:
    user = accounts.get_user(session, username)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no user named {username!r}")
    return UserOut.of(user)


@router.patch("/{username}", response_model=UserOut)
def update_user(
    username: str, body: UserPatch, admin: Admin, session: SessionDep, services: ServicesDep
) -> UserOut:
    """A new password, role or status revokes the user's tokens (here at once; in the other
    API processes at once through Redis, else within seconds)."""
    if username == admin.username and (body.role not in (None, "admin") or body.is_active is False):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "an admin cannot demote or disable itself")
    user = accounts.update_user(
        session,
        username,
        password=body.password,
        role=body.role,
        is_active=body.is_active,
        email=body.email,
    )
    session.commit()
    services.revocations.user_changed(username)
    return UserOut.of(user)


@router.delete("/{username}", status_code=status.HTTP_204_NO_CONTENT)
def delete_user(username: str, admin: Admin, session: SessionDep, services: ServicesDep) -> None:
    if username == admin.username:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "an admin cannot delete itself")
    accounts.delete_user(session, username)
    session.commit()
    services.revocations.user_changed(username)
