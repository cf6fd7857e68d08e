"""AES-256-GCM for sensitive fields stored in the database (user emails).

A stored value reads ``v1:<key id>:<base64(nonce | ciphertext | tag)>``. The key id says which
key decrypts it, so keys rotate without downtime: the first configured key encrypts, every
configured key decrypts, and ``prodclass users reencrypt`` moves old values to the first key.
The field's name is authenticated with the value, so a ciphertext copied into another column
does not decrypt; a tampered one fails loudly.
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


def cipher_from_settings(settings: Settings) -> FieldCipher:
    """The configured keys; in development without any, one generated under state_dir."""
    if settings.encryption_keys is not None:
        return FieldCipher.parse(settings.encryption_keys.get_secret_value())
    if settings.environment == "production":
        raise EncryptionError("PRODCLASS_ENCRYPTION_KEYS is required in production")
    return FieldCipher.parse(_local_key(settings.state_dir / "secrets" / "encryption.key"))


def _local_key(path: Path) -> str:
    if not path.exists():
        key = f"local:{base64.b64encode(os.urandom(32)).decode()}"
        atomic_write(path, lambda f: f.write(key.encode()))
        path.chmod(0o600)
    return path.read_text().strip()


_ciphers: dict[tuple[str | None, str, Path], FieldCipher] = {}


def get_cipher() -> FieldCipher:
    """The process's cipher, built once per configuration (tests change the settings)."""
    settings = get_settings()
    spec = settings.encryption_keys.get_secret_value() if settings.encryption_keys else None
    key = (spec, settings.environment, settings.state_dir.resolve())
    if key not in _ciphers:
        _ciphers[key] = cipher_from_settings(settings)
    return _ciphers[key]
