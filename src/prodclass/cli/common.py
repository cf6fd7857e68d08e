"""Helpers shared by the CLI commands: settings, error reporting, JSON output."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from prodclass.data.validate import DataValidationError
from prodclass.models.registry import UnknownFamilyError
from prodclass.params import ParamsError, SplitSection
from prodclass.registry.errors import RegistryError
from prodclass.settings import Settings, get_settings

console = Console(stderr=True, soft_wrap=True)

# Options several commands take, spelt once.
DataOption = Annotated[
    Path | None, typer.Option(help="Raw challenge folder (prepared on the fly).")
]
PreparedOption = Annotated[Path | None, typer.Option(help="Prepared folder from `data prepare`.")]
ParamsOption = Annotated[
    Path | None, typer.Option(help="params.yaml (default: PRODCLASS_PARAMS_FILE).")
]  # error sentences stay on one line

# Errors a user can fix: shown as one sentence, exit code 1, no traceback.
USER_ERRORS = (
    DataValidationError,
    ParamsError,
    RegistryError,
    UnknownFamilyError,
    FileNotFoundError,
    ValueError,
)


@contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except USER_ERRORS as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None


def settings() -> Settings:
    return get_settings()


def data_dir_or_default(data: Path | None) -> Path:
    return data if data is not None else settings().data_dir


@contextmanager
def prepared_folder(
    data: Path | None, prepared: Path | None, split: SplitSection
) -> Iterator[Path]:
    """``prepared`` as is, else ``data`` (default: settings) validated and split, for the
    duration of the block, into a temporary folder."""
    if prepared is not None:
        yield prepared
        return
    from prodclass.data.prepare import SplitParams, prepare
    from prodclass.data.validate import validate

    validated = validate(data_dir_or_default(data), workers=settings().image_check_workers)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "prepared"
        prepare(validated, out, SplitParams(split.val_size, split.test_size, split.seed))
        yield out


def write_json(payload: dict[str, Any], path: Path | None) -> None:
    """Write to ``path`` or print to stdout."""
    text = json.dumps(payload, indent=2, ensure_ascii=False)
    if path is None:
        typer.echo(text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
