"""The registry's error, apart from MLflow: commands name it without importing MLflow (seconds
of start-up for every `prodclass` command that never touches the registry)."""

from __future__ import annotations


class RegistryError(RuntimeError):
    """A registry operation that cannot be done; the message says why."""
