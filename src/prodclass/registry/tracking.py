"""MLflow connection: embedded SQLite store by default, a server when settings say so."""

from __future__ import annotations

import logging

import mlflow

from prodclass.settings import Settings

log = logging.getLogger(__name__)


def configure_mlflow(settings: Settings) -> str:
    """Point MLflow at the configured store and make sure the experiment exists.

    Called by commands, never at import, so importing prodclass has no side effects.
    Returns the experiment id.
    """
    uri = settings.tracking_uri
    if uri.startswith("sqlite:"):
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.get_experiment_by_name(settings.mlflow_experiment)
    if experiment is None:
        # Only the embedded store needs an artifact folder from us; a server has its own.
        location = settings.artifact_root.as_uri() if uri.startswith("sqlite:") else None
        experiment_id = mlflow.create_experiment(
            settings.mlflow_experiment, artifact_location=location
        )
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id
