"""AES-256-GCM for sensitive fields stored in the database (user emails).

A stored value reads ``v1:<key id>:<base64(nonce | ciphertext | tag)>``. The key id says which
key decrypts it, so keys rotate without downtime: the first configured key encrypts, every
configured key decrypts, and ``prodclass users reencrypt`` moves old values to the first key.
The field's name is authenticated with the value, so a ciphertext copied into another column
does not decrypt; a tampered one fails loudly.

Keys come from ``PRODCLASS_ENCRYPTION_KEYS``, the same in every process that shares the
database. Only a development process whose database is the SQLite file in its own state folder
generates one (``state_dir/secrets/encryption.key``); any other process without keys refuses,
saying what to set: replicas with a key each could not read one another's values.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.engine import make_url

from prodclass.files import atomic_write
from prodclass.settings import Settings, get_settings

VERSION = "v1"
KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
NONCE_BYTES = 12


class EncryptionError(ValueError):
    """Bad key configuration, or a stored value that does not decrypt (the message says why)."""


@dataclass(frozen=True)
class FieldCipher:
    keys: dict[str, bytes]  # key id -> 32-byte key; the first one encrypts

    @classmethod
    def parse(cls, spec: str) -> FieldCipher:
        """Keys from ``id:base64key,id:base64key`` (the PRODCLASS_ENCRYPTION_KEYS format)."""
        keys: dict[str, bytes] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            key_id, sep, encoded = item.partition(":")
            if not sep or not KEY_ID.match(key_id):
                raise EncryptionError("encryption keys read `id:base64key,...`")
            try:
                key = base64.b64decode(encoded, validate=True)
            except binascii.Error:
                raise EncryptionError(f"encryption key {key_id!r} is not base64") from None
            if len(key) != 32:
                raise EncryptionError(f"encryption key {key_id!r} must be 32 bytes (AES-256)")
            if key_id in keys:
                raise EncryptionError(f"encryption key id {key_id!r} appears twice")
            keys[key_id] = key
        if not keys:
            raise EncryptionError("no encryption key given")
        return cls(keys)

    @property
    def current_id(self) -> str:
        return next(iter(self.keys))

    def encrypt(self, plaintext: str, field: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self.keys[self.current_id]).encrypt(
            nonce, plaintext.encode(), field.encode()
        )
        return f"{VERSION}:{self.current_id}:{base64.b64encode(nonce + sealed).decode()}"

    def decrypt(self, stored: str, field: str) -> str:
        version, _, rest = stored.partition(":")
        key_id, _, payload = rest.partition(":")
        if version != VERSION or not payload:
            raise EncryptionError(f"{field}: not an encrypted value")
        if key_id not in self.keys:
            raise EncryptionError(f"{field}: encrypted with key {key_id!r}, not configured")
        try:
            raw = base64.b64decode(payload, validate=True)
            plain = AESGCM(self.keys[key_id]).decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], field.encode()
            )
        except (binascii.Error, InvalidTag, ValueError):
            raise EncryptionError(f"{field}: the stored value does not decrypt") from None
        return plain.decode()

    def is_current(self, stored: str) -> bool:
        """Whether ``stored`` is already under the key that encrypts now."""
        return stored.split(":", 2)[1:2] == [self.current_id]


# what to set, in the sentences that refuse to go on without keys
NEW_KEY = "`id:base64key` (32 random bytes; e.g. `k1:$(openssl rand -base64 32)`)"


def database_in_state_dir(settings: Settings) -> bool:
    """Whether the application database is this process's own: a SQLite file inside its state
    folder (or in memory). Any other database (PostgreSQL, a SQLite file elsewhere) may be
    shared by other processes, each with a state folder of its own."""
    url = make_url(settings.db_url)
    if not url.drivername.startswith("sqlite"):
        return False
    if url.database in (None, "", ":memory:"):
        return True
    return Path(url.database).resolve().is_relative_to(settings.state_dir.resolve())


def check_keys(settings: Settings) -> None:
    """Raise EncryptionError, saying what to set, unless the settings give usable keys or
    allow a generated one (development, database in the state folder). Writes nothing."""
    if settings.encryption_keys is not None:
        FieldCipher.parse(settings.encryption_keys.get_secret_value())
        return
    if settings.environment == "production":
        raise EncryptionError(
            f"PRODCLASS_ENCRYPTION_KEYS is required in production: set it to {NEW_KEY}, the "
            "same in every process that shares the database"
        )
    if not database_in_state_dir(settings):
        old = _local_key_path(settings)
        raise EncryptionError(
            "PRODCLASS_ENCRYPTION_KEYS is required when PRODCLASS_DATABASE_URL names a database "
            "other processes may share: a key generated in this process's state folder would "
            f"leave what it encrypts unreadable to them (and theirs to it). Set it to {NEW_KEY}, "
            "the same in every process"
            + (
                f"; the key this state folder generated before is in {old}: list it after the "
                "new one so values it encrypted still decrypt"
                if old.is_file()
                else ""
            )
        )


def cipher_from_settings(settings: Settings) -> FieldCipher:
    """The configured keys; in development without any, and only when the database is the
    SQLite file in state_dir, one generated under state_dir/secrets. A process whose database
    others may share never invents a key: EncryptionError says what to set."""
    check_keys(settings)
    if settings.encryption_keys is not None:
        return FieldCipher.parse(settings.encryption_keys.get_secret_value())
    return FieldCipher.parse(_local_key(_local_key_path(settings)))


def _local_key_path(settings: Settings) -> Path:
    return settings.state_dir / "secrets" / "encryption.key"


def _local_key(path: Path) -> str:
    if not path.exists():
        key = f"local:{base64.b64encode(os.urandom(32)).decode()}"
        atomic_write(path, lambda f: f.write(key.encode()))
        path.chmod(0o600)
    return path.read_text().strip()


_ciphers: dict[tuple[str | None, str, Path, str], FieldCipher] = {}


def get_cipher() -> FieldCipher:
    """The process's cipher, built once per configuration (tests change the settings)."""
    settings = get_settings()
    spec = settings.encryption_keys.get_secret_value() if settings.encryption_keys else None
    key = (spec, settings.environment, settings.state_dir.resolve(), settings.db_url)
    if key not in _ciphers:
        _ciphers[key] = cipher_from_settings(settings)
    return _ciphers[key]
