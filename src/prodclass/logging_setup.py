"""Logging for the CLI: rich handler, level from settings. Library code only logs."""

from __future__ import annotations

import logging

from rich.logging import RichHandler


def configure_logging(level: str = "INFO") -> None:
    """Route log records through rich; quiet the chattiest third-party loggers."""
    logging.basicConfig(
        level=level.upper(),
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(rich_tracebacks=False, show_path=False)],
        force=True,
    )
    for noisy in ("alembic", "mlflow", "urllib3", "botocore", "git", "dvc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
