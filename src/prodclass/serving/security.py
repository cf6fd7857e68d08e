"""Access tokens: signed JWTs carrying the user's name and role, short-lived.

Requests are authorised from the token alone (no database read on the prediction path, so
predictions go on while the database is briefly down); a token lives ``jwt_expire_minutes``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

ALGORITHM = "HS256"


class InvalidTokenError(ValueError):
    pass


@dataclass(frozen=True)
class Principal:
    username: str
    role: str


class TokenIssuer:
    def __init__(self, secret: str | None, expire_minutes: int) -> None:
        # no configured secret: a random one, so no default key ever signs a token
        self.secret = secret or secrets.token_urlsafe(48)
        self.ephemeral = secret is None
        self.expire = timedelta(minutes=expire_minutes)

    def issue(self, username: str, role: str) -> str:
        now = datetime.now(UTC)
        claims = {"sub": username, "role": role, "iat": now, "exp": now + self.expire}
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token, self.secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]}
            )
        except jwt.ExpiredSignatureError:
            raise InvalidTokenError("token expired") from None
        except jwt.PyJWTError as exc:
            raise InvalidTokenError(f"invalid token: {exc}") from None
        return Principal(str(claims["sub"]), str(claims.get("role", "")))
