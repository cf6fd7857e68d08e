"""Where the encryption keys come from: the settings, or (development only, on the SQLite file of
the process's own state folder) a key generated there; a process whose database others may
share never generates one, and says what to set."""

from __future__ import annotations

import base64
import os

import pytest

from prodclass.db.encryption import EncryptionError, cipher_from_settings, database_in_state_dir
from prodclass.settings import Settings

KEYS = f"k1:{base64.b64encode(os.urandom(32)).decode()}"


def _settings(tmp_path, **values) -> Settings:
    return Settings(_env_file=None, state_dir=tmp_path / "state", **values)


@pytest.mark.parametrize(
    ("database", "own"),
    [
        (None, True),  # the default: state_dir/prodclass.db
        ("sqlite:///{state}/app/prodclass.db", True),
        ("sqlite://", True),  # in memory
        ("sqlite:///{tmp}/shared.db", False),  # beside several state folders
        ("postgresql://prodclass:pw@db.internal:5432/prodclass", False),
        ("postgresql+psycopg://db.internal/prodclass", False),
    ],
    ids=["default", "sqlite-in-state", "memory", "sqlite-elsewhere", "postgresql", "psycopg"],
)
def test_only_the_sqlite_file_of_the_state_folder_counts_as_a_database_of_its_own(
    tmp_path, database, own
):
    url = database and database.format(state=tmp_path / "state", tmp=tmp_path)
    assert database_in_state_dir(_settings(tmp_path, database_url=url)) is own


@pytest.mark.parametrize(
    "database", ["postgresql://prodclass:pw@db.internal:5432/prodclass", "sqlite:///{tmp}/s.db"]
)
def test_a_process_on_a_shared_database_never_generates_a_key(tmp_path, database):
    settings = _settings(tmp_path, database_url=database.format(tmp=tmp_path))
    with pytest.raises(EncryptionError) as refused:
        cipher_from_settings(settings)
    said = str(refused.value)
    assert "PRODCLASS_ENCRYPTION_KEYS is required when PRODCLASS_DATABASE_URL" in said
    assert "k1:$(openssl rand -base64 32)" in said  # how to make one
    assert "db.internal" not in said  # the database URL (and its password) is not repeated
    assert not (tmp_path / "state").exists()  # nothing written

    given = _settings(tmp_path, database_url=settings.database_url, encryption_keys=KEYS)
    cipher = cipher_from_settings(given)
    assert cipher.decrypt(cipher.encrypt("a@b.fr", "users.email"), "users.email") == "a@b.fr"


def test_a_key_generated_before_is_named_so_its_values_stay_readable(tmp_path):
    """A development process that generated a key when its database was its own, moved to a
    shared one: the refusal says where that key is, to list it after the new one."""
    own = cipher_from_settings(_settings(tmp_path))
    old = tmp_path / "state" / "secrets" / "encryption.key"
    assert old.is_file()
    stored = own.encrypt("a@b.fr", "users.email")

    shared = _settings(tmp_path, database_url="postgresql://db.internal/prodclass")
    with pytest.raises(EncryptionError, match=f"generated before is in {old}"):
        cipher_from_settings(shared)
    both = f"{KEYS},{old.read_text().strip()}"
    rotated = cipher_from_settings(
        _settings(tmp_path, database_url=shared.database_url, encryption_keys=both)
    )
    assert rotated.decrypt(stored, "users.email") == "a@b.fr"
    assert rotated.current_id == "k1"


def test_production_needs_keys_whatever_the_database(tmp_path):
    with pytest.raises(EncryptionError, match="required in production: set it to `id:base64key`"):
        cipher_from_settings(_settings(tmp_path, environment="production"))
    assert not (tmp_path / "state").exists()
