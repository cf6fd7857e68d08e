"""User accounts: create, authenticate, list, change, delete. Used by the CLI and the API.

Passwords are stored as argon2id hashes, emails encrypted (db/encryption.py). Changing a
user's password, role or status, or deleting the account, revokes the tokens it holds."""

from __future__ import annotations

import re

from pwdlib import PasswordHash
from sqlalchemy import select
from sqlalchemy.orm import Session

from prodclass.db.encryption import get_cipher
from prodclass.db.revocations import revoke_user_tokens
from prodclass.db.tables import ROLES, User
from prodclass.settings import get_settings

_hasher = PasswordHash.recommended()  # argon2id
USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 8
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{1,63}$")
EMAIL_FIELD = "users.email"  # authenticated with the ciphertext: it decrypts in this column only
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


def check_email(email: str) -> str:
    if not EMAIL.match(email):
        raise UserError("email must look like name@domain.tld")
    return email


def email_of(user: User) -> str | None:
    """The user's email, decrypted (None when none is stored)."""
    if user.email_encrypted is None:
        return None
    return get_cipher().decrypt(user.email_encrypted, EMAIL_FIELD)


def _encrypt_email(email: str) -> str:
    checked = check_email(email)  # a bad address is the user's error, whatever the keys
    return get_cipher().encrypt(checked, EMAIL_FIELD)


def get_user(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def create_user(
    session: Session, username: str, password: str, role: str, email: str | None = None
) -> User:
    if not USERNAME.match(username):
        raise UserError("username must be 1-64 letters, digits or . _ @ -")
    check_role(role)
    check_password(password)
    if get_user(session, username) is not None:
        raise UserError(f"user {username!r} already exists")
    user = User(username=username, password_hash=_hasher.hash(password), role=role)
    if email is not None:
        user.email_encrypted = _encrypt_email(email)
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
    email: str | None = None,
) -> User:
    """Change what is given; a new password, role or status revokes the user's tokens."""
    user = get_user(session, username)
    if user is None:
        raise LookupError(f"no user named {username!r}")
    if password is not None:
        user.password_hash = _hasher.hash(check_password(password))
    if role is not None:
        user.role = check_role(role)
    if is_active is not None:
        user.is_active = is_active
    if email is not None:
        user.email_encrypted = _encrypt_email(email)
    if (password, role, is_active) != (None, None, None):
        _revoke_tokens(session, username)
    session.flush()
    return user


def reencrypt_emails(session: Session) -> int:
    """Re-encrypt every stored email under the current key (after a rotation); the count."""
    cipher, count = get_cipher(), 0
    for user in list_users(session):
        stored = user.email_encrypted
        if stored is not None and not cipher.is_current(stored):
            user.email_encrypted = cipher.encrypt(cipher.decrypt(stored, EMAIL_FIELD), EMAIL_FIELD)
            count += 1
    session.flush()
    return count


def _revoke_tokens(session: Session, username: str) -> None:
    revoke_user_tokens(session, username, get_settings().jwt_expire_minutes * 60)


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def delete_user(session: Session, username: str) -> None:
    user = get_user(session, username)
    if user is None:
        raise LookupError(f"no user named {username!r}")
    session.delete(user)
    _revoke_tokens(session, username)
