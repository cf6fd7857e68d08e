"""AES-GCM field encryption: round trip, tampering and misplaced values refused, key rotation
end to end (`prodclass users reencrypt` on a real database), production needs real keys."""

from __future__ import annotations

import base64
import os
import stat

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from prodclass.cli.main import app
from prodclass.db.encryption import EncryptionError, FieldCipher, cipher_from_settings
from prodclass.db.session import session_scope, upgrade
from prodclass.db.tables import User
from prodclass.db.users import create_user, email_of
from prodclass.settings import Settings, get_settings


def _key(key_id: str) -> str:
    return f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"


def test_a_value_round_trips_and_is_not_readable_at_rest():
    cipher = FieldCipher.parse(_key("k1"))
    stored = cipher.encrypt("alice@shop.test", "users.email")
    assert stored.startswith("v1:k1:") and "alice" not in stored
    assert cipher.decrypt(stored, "users.email") == "alice@shop.test"
    assert cipher.encrypt("alice@shop.test", "users.email") != stored  # a fresh nonce each time


def test_tampered_misplaced_or_foreign_values_do_not_decrypt():
    cipher = FieldCipher.parse(_key("k1"))
    stored = cipher.encrypt("alice@shop.test", "users.email")
    prefix, payload = stored.rsplit(":", 1)
    raw = bytearray(base64.b64decode(payload))
    raw[-1] ^= 1
    tampered = f"{prefix}:{base64.b64encode(bytes(raw)).decode()}"
    with pytest.raises(EncryptionError, match="does not decrypt"):
        cipher.decrypt(tampered, "users.email")
    with pytest.raises(EncryptionError, match="does not decrypt"):
        cipher.decrypt(stored, "users.api_key")  # the field name is authenticated too
    with pytest.raises(EncryptionError, match="not configured"):
        FieldCipher.parse(_key("k2")).decrypt(stored, "users.email")
    with pytest.raises(EncryptionError, match="not an encrypted value"):
        cipher.decrypt("alice@shop.test", "users.email")


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("", "no encryption key"),
        ("k1", "id:base64key"),
        ("k1:not-base64!", "not base64"),
        (f"k1:{base64.b64encode(b'short').decode()}", "32 bytes"),
        (f"{_key('k1')},{_key('k1')}", "twice"),
    ],
    ids=["empty", "no-colon", "not-base64", "short-key", "id-twice"],
)
def test_bad_key_settings_are_explained(spec, reason):
    with pytest.raises(EncryptionError, match=reason):
        FieldCipher.parse(spec)


def test_production_needs_keys_development_makes_a_private_one(tmp_path):
    with pytest.raises(EncryptionError, match="required in production"):
        cipher_from_settings(Settings(environment="production", state_dir=tmp_path))
    cipher = cipher_from_settings(Settings(state_dir=tmp_path))
    key_file = tmp_path / "secrets" / "encryption.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = cipher_from_settings(Settings(state_dir=tmp_path))  # the same key next time
    assert again.decrypt(cipher.encrypt("x@y.z", "f"), "f") == "x@y.z"


def test_key_rotation_reencrypts_every_stored_email(tmp_path, monkeypatch):
    old, new = _key("old"), _key("new")
    db = f"sqlite:///{tmp_path / 'app.db'}"
    monkeypatch.setenv("PRODCLASS_DATABASE_URL", db)
    monkeypatch.setenv("PRODCLASS_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("PRODCLASS_ENCRYPTION_KEYS", old)
    get_settings.cache_clear()
    upgrade(db)
    with session_scope(db) as session:
        create_user(session, "alice", "alice-password", "client", "alice@shop.test")

    monkeypatch.setenv("PRODCLASS_ENCRYPTION_KEYS", f"{new},{old}")  # the new key first
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["users", "reencrypt"])
    assert result.exit_code == 0, result.output
    assert "1 stored value(s) re-encrypted" in result.output

    monkeypatch.setenv("PRODCLASS_ENCRYPTION_KEYS", new)  # the old key is gone
    get_settings.cache_clear()
    with session_scope(db) as session:
        user = session.scalar(select(User).where(User.username == "alice"))
        assert user.email_encrypted.startswith("v1:new:")
        assert email_of(user) == "alice@shop.test"
    get_settings.cache_clear()
