"""Commands of the prediction service: `serve`, `db upgrade`, `users ...`, `feedback export`,
`index build`."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from prodclass.cli.common import console, settings, user_errors

db_app = typer.Typer(help="The application database (users, prediction log, feedback).")
users_app = typer.Typer(help="API accounts and their roles (admin, reviewer, client).")
feedback_app = typer.Typer(help="Reviewers' feedback on predictions.")
index_app = typer.Typer(help="Catalogue similarity index of a model version.")


def serve(
    host: Annotated[str | None, typer.Option(help="Default: PRODCLASS_API_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Default: PRODCLASS_API_PORT.")] = None,
) -> None:
    """Run the prediction API (uvicorn) with the model PRODCLASS_MODEL_URI points to."""
    import uvicorn

    from prodclass.db.session import DatabaseNotReadyError, check_schema
    from prodclass.serving.api.app import create_app
    from prodclass.serving.security import InsecureConfigurationError, check_production_secrets

    config = settings()
    try:
        check_production_secrets(config)
        check_schema(config.db_url)
    except (DatabaseNotReadyError, InsecureConfigurationError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None
    if bool(config.tls_certfile) != bool(config.tls_keyfile):
        console.print("[bold red]error:[/] HTTPS needs both PRODCLASS_TLS_CERTFILE and _KEYFILE")
        raise typer.Exit(1)
    # uvicorn re-raises the SIGTERM it handled once its graceful shutdown (requests drained,
    # prediction log flushed) is complete; with the default action the process would end as
    # "killed" (143). A no-op handler makes that re-raise harmless: a clean drain exits 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn.run(
        create_app(config),
        host=host or config.api_host,
        port=port or config.api_port,
        log_level=config.log_level.lower(),
        timeout_graceful_shutdown=10,
        ssl_certfile=config.tls_certfile,
        ssl_keyfile=config.tls_keyfile,
    )


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply the schema migrations (creates the database on first use)."""
    from prodclass.db.session import upgrade

    with user_errors():
        now = upgrade(settings().db_url, revision)
    console.print(f"database schema at revision {now}")


def _password(password_stdin: bool, generate: bool) -> str:
    """From stdin, generated (the caller prints it once stored), or typed at a hidden prompt."""
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if generate:
        import secrets

        return secrets.token_urlsafe(12)
    return typer.prompt("password", hide_input=True, confirmation_prompt=True)


PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input.")
]
GeneratePassword = Annotated[
    bool, typer.Option("--generate-password", help="Draw a random password and print it.")
]


@users_app.command("create")
def users_create(
    username: Annotated[str, typer.Argument()],
    role: Annotated[str, typer.Option(help="admin, reviewer or client.")],
    password_stdin: PasswordStdin = False,
    generate_password: GeneratePassword = False,
    email: Annotated[str | None, typer.Option(help="Stored encrypted (AES-GCM).")] = None,
) -> None:
    """Create an account (the first admin included); the password never goes on the command
    line: pipe it in with --password-stdin, generate one, or type it at the prompt."""
    from prodclass.db.session import session_scope
    from prodclass.db.users import create_user

    password = _password(password_stdin, generate_password)
    with user_errors(), session_scope(settings().db_url) as session:
        user = create_user(session, username, password, role, email)
    console.print(f"user {user.username} created with role {user.role}")
    if generate_password:
        typer.echo(f"password of {username}: {password}")


@users_app.command("password")
def users_password(
    username: Annotated[str, typer.Argument()],
    password_stdin: PasswordStdin = False,
    generate_password: GeneratePassword = False,
) -> None:
    """Set an account's password (and re-enable it)."""
    from prodclass.db.session import session_scope
    from prodclass.db.users import update_user

    password = _password(password_stdin, generate_password)
    with user_errors(), session_scope(settings().db_url) as session:
        try:
            update_user(session, username, password=password, is_active=True)
        except LookupError as exc:
            raise ValueError(str(exc.args[0])) from None
    _revoked_everywhere(username)
    console.print(f"password of {username} set")
    if generate_password:
        typer.echo(f"password of {username}: {password}")


def _revoked_everywhere(username: str) -> None:
    """With Redis, the API replicas refuse the user's older tokens at once (without it, at
    their next read of the revocations table, within seconds)."""
    from prodclass.serving.security import RevocationList
    from prodclass.serving.shared_revocations import SharedRevocations
    from prodclass.serving.shared_state import SharedState

    state = SharedState.from_settings(settings())
    if state.client is None:
        return
    try:
        RevocationList(settings().db_url, shared=SharedRevocations(state)).user_changed(username)
    finally:
        state.close()


@users_app.command("list")
def users_list() -> None:
    """Accounts, their roles and whether they are active."""
    from prodclass.db.session import session_scope
    from prodclass.db.users import list_users

    with session_scope(settings().db_url) as session:
        for user in list_users(session):
            state = "active" if user.is_active else "disabled"
            typer.echo(f"{user.username}\t{user.role}\t{state}")


@users_app.command("reencrypt")
def users_reencrypt() -> None:
    """After putting a new key first in PRODCLASS_ENCRYPTION_KEYS: re-encrypt every stored
    email under it (then the old key can be removed)."""
    from prodclass.db.session import session_scope
    from prodclass.db.users import reencrypt_emails

    with user_errors(), session_scope(settings().db_url) as session:
        count = reencrypt_emails(session)
    console.print(f"{count} stored value(s) re-encrypted under the current key")


@feedback_app.command("export")
def feedback_export(
    out: Annotated[Path, typer.Argument(help="Folder to write in the challenge layout.")],
) -> None:
    """Write reviewed products (their confirmed or corrected category) as a challenge-layout
    folder, ready to validate and merge into training data."""
    from prodclass.db.feedback import export_labelled
    from prodclass.db.session import session_scope, upgrade
    from prodclass.photo_store import open_photo_store

    config = settings()
    upgrade(config.db_url)  # a fresh machine has no database yet: nothing reviewed, no error
    if out.exists():  # the export is the whole set of verdicts, not an addition
        import shutil

        shutil.rmtree(out)
    with session_scope(config.db_url) as session:
        count = export_labelled(session, open_photo_store(config), out)
    console.print(f"{count} reviewed products written to {out}")


@index_app.command("build")
def index_build(
    model: Annotated[str | None, typer.Option(help="Default: PRODCLASS_MODEL_URI.")] = None,
    data: Annotated[
        Path | None, typer.Option(help="Labelled catalogue (default: PRODCLASS_DATA_DIR).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if this version has one.")] = False,
) -> None:
    """Embed the labelled catalogue with a model, for `/products/similar` (one index per
    model version, under state_dir/similarity/)."""
    from prodclass.cli.common import data_dir_or_default
    from prodclass.data.validate import validate
    from prodclass.registry.tracking import configure_mlflow
    from prodclass.serving.predictor import Predictor
    from prodclass.serving.similarity import CatalogueIndex, index_folder

    config = settings()
    with user_errors():
        configure_mlflow(config)
        predictor = Predictor.load(model or config.model_uri)
        existing = index_folder(config.state_dir, predictor.model_version or predictor.model_uri)
        if (existing / "index.json").is_file() and not force:
            console.print(f"catalogue index of this model exists: {existing} (--force rebuilds)")
            return
        products = validate(data_dir_or_default(data), workers=config.image_check_workers).products
        index = CatalogueIndex.build(predictor, products)
        folder = index.save(index_folder(config.state_dir, index.model_key))
    sizes = ", ".join(f"{m} {int(p.sum())}" for m, p in index.present.items())
    console.print(
        f"catalogue index of model {index.model_key}: {len(products)} products ({sizes})"
        f" -> {folder}"
    )


def ui(
    host: Annotated[str | None, typer.Option(help="Default: PRODCLASS_UI_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Default: PRODCLASS_UI_PORT.")] = None,
) -> None:
    """Run the web app (Streamlit); it talks to the API at PRODCLASS_API_URL.

    The process becomes Streamlit (exec), so signals sent to it (Ctrl-C, SIGTERM from a
    supervisor) reach the server itself and no child is left behind.
    """
    import prodclass.ui

    config = settings()
    script = Path(prodclass.ui.__file__).with_name("app.py")
    command = [
        sys.executable, "-m", "streamlit", "run", str(script),
        "--server.address", host or config.ui_host,
        "--server.port", str(port or config.ui_port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "viewer",
    ]  # fmt: skip
    console.print(
        f"web app on http://{host or config.ui_host}:{port or config.ui_port} "
        f"(API: {config.api_base_url})"
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)
