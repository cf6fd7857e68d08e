"""The service commands on a fresh database: serve refuses an unmigrated schema with the fix,
migrations are idempotent, users are created non-interactively and refused with a reason."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from prodclass.cli.main import app
from prodclass.db.session import head_revision
from prodclass.settings import get_settings

runner = CliRunner()


@pytest.fixture
def fresh_database(tmp_path, monkeypatch) -> str:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    monkeypatch.setenv("PRODCLASS_DATABASE_URL", url)
    monkeypatch.setenv("PRODCLASS_STATE_DIR", str(tmp_path / "state"))
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def test_serve_refuses_an_unmigrated_database(fresh_database):
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 1 and "prodclass db upgrade" in result.output


def test_users_created_from_stdin_after_upgrade(fresh_database):
    for _ in range(2):  # upgrading twice is harmless
        upgraded = runner.invoke(app, ["db", "upgrade"])
        assert upgraded.exit_code == 0 and f"revision {head_revision()}" in upgraded.output
    created = runner.invoke(
        app,
        ["users", "create", "chief", "--role", "admin", "--password-stdin"],
        input="a-long-password\n",
    )
    assert created.exit_code == 0, created.output
    again = runner.invoke(
        app,
        ["users", "create", "chief", "--role", "admin", "--password-stdin"],
        input="a-long-password\n",
    )
    assert again.exit_code == 1 and "already exists" in again.output
    bad_role = runner.invoke(
        app, ["users", "create", "x", "--role", "root", "--password-stdin"], input="long-enough\n"
    )
    assert bad_role.exit_code == 1 and "unknown role" in bad_role.output
    listed = runner.invoke(app, ["users", "list"])
    assert "chief\tadmin\tactive" in listed.output
