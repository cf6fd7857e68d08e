"""Access tokens: signed JWTs carrying the user's name and role, short-lived, revocable.

Requests are authorised from the token alone, without a database read on the prediction path
(predictions go on while the database is briefly down): the signature, algorithm, expiry,
issuer and audience are checked, then the token id against an in-memory copy of the
revocations table, refreshed every few seconds so a sign-out or a disabled account made
through any API process (or the CLI) applies everywhere within that time. With Redis
(``PRODCLASS_REDIS_URL``) each revocation is also published there and every request checks it,
so it applies in every replica at once.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import uuid
from dataclasses import dataclass

import jwt
from sqlalchemy.exc import SQLAlchemyError

from prodclass.db.encryption import EncryptionError, check_keys
from prodclass.db.revocations import RevokedSet, load_revoked, revoke_token, user_cutoff
from prodclass.db.session import session_scope
from prodclass.serving.shared_revocations import SharedRevocations
from prodclass.settings import Settings

log = logging.getLogger(__name__)

ALGORITHM = "HS256"  # the only one accepted: no "none", no asymmetric/symmetric confusion
MIN_SECRET_LENGTH = 32
REQUIRED_CLAIMS = ["exp", "iat", "sub", "iss", "aud", "jti"]


class InvalidTokenError(ValueError):
    pass


class InsecureConfigurationError(RuntimeError):
    """Production settings that would make tokens or stored secrets guessable."""


@dataclass(frozen=True)
class Principal:
    username: str
    role: str
    token_id: str = ""
    expires_at: float = 0.0


def check_production_secrets(settings: Settings) -> None:
    """In production, refuse to start with a missing, short or trivial JWT secret, or without
    encryption keys; development generates throwaway ones instead."""
    if settings.environment != "production":
        return
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else ""
    if len(secret) < MIN_SECRET_LENGTH or len(set(secret)) < 8:
        raise InsecureConfigurationError(
            f"PRODCLASS_JWT_SECRET must be a random string of at least {MIN_SECRET_LENGTH} "
            "characters in production (e.g. `openssl rand -hex 32`)"
        )
    try:
        check_keys(settings)
    except EncryptionError as exc:
        raise InsecureConfigurationError(str(exc)) from None


class RevocationList:
    """The revocations table mirrored in memory, refreshed by a background thread; with
    ``shared``, also published in Redis and checked there on every request."""

    def __init__(
        self,
        db_url: str,
        refresh_seconds: float = 5.0,
        shared: SharedRevocations | None = None,
    ) -> None:
        self.db_url = db_url
        self.refresh_seconds = refresh_seconds
        self.shared = shared
        self._revoked = RevokedSet()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def is_revoked(self, principal: Principal, issued_at: float) -> bool:
        token = (principal.token_id, principal.username, issued_at)
        if self._revoked.covers(*token):
            return True
        return self.shared is not None and self.shared.covers(*token)

    def revoke(self, principal: Principal) -> None:
        """Revoke one token now, here and (through the table, and Redis when configured) in
        every other process."""
        with session_scope(self.db_url) as session:
            revoke_token(session, principal.token_id, principal.username, principal.expires_at)
        self._revoked.tokens.add(principal.token_id)
        if self.shared is not None:
            self.shared.add_token(principal.token_id, principal.expires_at)

    def user_changed(self, username: str) -> None:
        """Apply the revocation of ``username``'s tokens just stored (password, role, status
        changed; account deleted) here at once and, through Redis, in every replica."""
        self.refresh()
        if self.shared is None:
            return
        try:
            with session_scope(self.db_url) as session:
                cutoff = user_cutoff(session, username)
        except SQLAlchemyError as exc:  # the others still read it from the table soon
            log.warning("revocation of %s not published: %s", username, type(exc).__name__)
            return
        if cutoff is not None:
            self.shared.add_user(username, *cutoff)

    def refresh(self) -> None:
        try:
            with session_scope(self.db_url) as session:
                revoked = load_revoked(session)
        except SQLAlchemyError as exc:  # database down: keep the last copy
            log.warning("revocations not refreshed: %s", type(exc).__name__)
            return
        self._revoked = revoked

    def start(self) -> None:
        self.refresh()

        def loop() -> None:
            while not self._stop.wait(self.refresh_seconds):
                self.refresh()

        self._thread = threading.Thread(target=loop, name="revocations", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


class TokenIssuer:
    def __init__(
        self,
        secret: str | None,
        expire_minutes: int,
        issuer: str = "prodclass",
        audience: str = "prodclass-api",
        revocations: RevocationList | None = None,
    ) -> None:
        # no configured secret: a random one, so no default key ever signs a token
        self.secret = secret or secrets.token_urlsafe(48)
        self.ephemeral = secret is None
        self.expire_seconds = expire_minutes * 60
        self.issuer = issuer
        self.audience = audience
        self.revocations = revocations

    def issue(self, username: str, role: str) -> str:
        now = time.time()  # sub-second iat: a token issued just after a revocation stays valid
        claims = {
            "sub": username,
            "role": role,
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "exp": int(now + self.expire_seconds),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=[ALGORITHM],
                issuer=self.issuer,
                audience=self.audience,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidTokenError("token expired") from None
        except jwt.PyJWTError as exc:
            raise InvalidTokenError(f"invalid token: {exc}") from None
        principal = Principal(
            str(claims["sub"]), str(claims.get("role", "")), str(claims["jti"]), claims["exp"]
        )
        if self.revocations is not None and self.revocations.is_revoked(
            principal, float(claims["iat"])
        ):
            raise InvalidTokenError("token revoked (signed out, or the account changed)")
        return principal
