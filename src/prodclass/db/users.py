"""User accounts: create, authenticate, list, change, delete. Used by the CLI and the API."""

from __future__ import annotations

import re

from pwdlib import PasswordHash
from sqlalchemy import select
from sqlalchemy.orm import Session

from prodclass.db.tables import ROLES, User

_hasher = PasswordHash.recommended()  # argon2id
USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 8
# verifying against a real hash when the user does not exist keeps the timing the same
_DUMMY_HASH = _hasher.hash("not-a-real-password")


class UserError(ValueError):
    """A user operation refused (bad name, weak password, unknown role, duplicate...)."""


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    return role


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"password must have at least {MIN_PASSWORD} characters")
    return password


def get_user(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def create_user(session: Session, username: str, password: str, role: str) -> User:
    if not USERNAME.match(username):
        raise UserError("username must be 1-64 letters, digits or . _ @ -")
    check_role(role)
    check_password(password)
    if get_user(session, username) is not None:
        raise UserError(f"user {username!r} already exists")
    user = User(username=username, password_hash=_hasher.hash(password), role=role)
    session.add(user)
    session.flush()
    return user


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The active user with this password, or None."""
    user = get_user(session, username)
    if user is None:
        _hasher.verify(password, _DUMMY_HASH)
        return None
    if not _hasher.verify(password, user.password_hash) or not user.is_active:
        return None
    return user


def update_user(
    session: Session,
    username: str,
    *,
    password: str | None = None,
    role: str | None = None,
    is_active: bool | None = None,
) -> User:
    user = get_user(session, username)
    if user is None:
        raise LookupError(f"no user named {username!r}")
    if password is not None:
        user.password_hash = _hasher.hash(check_password(password))
    if role is not None:
        user.role = check_role(role)
    if is_active is not None:
        user.is_active = is_active
    session.flush()
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def delete_user(session: Session, username: str) -> None:
    user = get_user(session, username)
    if user is None:
        raise LookupError(f"no user named {username!r}")
    session.delete(user)
