"""`prodclass deploy azureml`: the champion (or any model URI) to an Azure ML managed online
endpoint, from the YAML in deploy/azureml/, with the azure-ai-ml SDK."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prodclass.cli.common import console, settings, user_errors

app = typer.Typer(help="Deploy the model to the cloud.")
AZUREML = Path("deploy/azureml")


@app.command()
def azureml(
    model: Annotated[str | None, typer.Option(help="Default: PRODCLASS_MODEL_URI.")] = None,
    folder: Annotated[
        Path, typer.Option(help="Folder of endpoint/deployment/environment.yml.")
    ] = AZUREML,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Load and assemble everything, deploy nothing.")
    ] = False,
) -> None:
    """Create or update the endpoint and its deployment with the model, then route all traffic
    to it. Workspace from PRODCLASS_AZURE_SUBSCRIPTION_ID / _RESOURCE_GROUP / _ML_WORKSPACE;
    credentials from the environment (DefaultAzureCredential: az login, managed identity...)."""
    from azure.ai.ml import load_environment, load_online_deployment, load_online_endpoint
    from azure.ai.ml.entities import Model

    from prodclass.registry.model_registry import model_folder, resolve_version
    from prodclass.registry.tracking import configure_mlflow

    config = settings()
    with user_errors():
        configure_mlflow(config)
        uri = model or config.model_uri
        local = model_folder(uri)
        version = resolve_version(uri) or "local"
        endpoint = load_online_endpoint(folder / "endpoint.yml")
        deployment = load_online_deployment(folder / "deployment.yml")
        deployment.environment = load_environment(folder / "environment.yml")
        deployment.model = Model(
            path=str(local),
            name=config.registered_model_name,
            description=f"prodclass {uri} (version {version})",
        )
        deployment.environment_variables = dict(deployment.environment_variables or {}) | {
            "PRODCLASS_MODEL_VERSION": version
        }
    plan = (
        f"endpoint {endpoint.name} ({endpoint.auth_mode}), deployment {deployment.name} on "
        f"{deployment.instance_type} x{deployment.instance_count}, model {uri} (version "
        f"{version}) from {local}, scoring script {deployment.code_configuration.scoring_script}"
    )
    if dry_run:
        console.print(f"dry run: {plan}")
        return
    missing = [
        name
        for name, value in (
            ("PRODCLASS_AZURE_SUBSCRIPTION_ID", config.azure_subscription_id),
            ("PRODCLASS_AZURE_RESOURCE_GROUP", config.azure_resource_group),
            ("PRODCLASS_AZURE_ML_WORKSPACE", config.azure_ml_workspace),
        )
        if not value
    ]
    if missing:
        console.print(f"[bold red]error:[/] set {', '.join(missing)}")
        raise typer.Exit(1)
    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    client = MLClient(
        DefaultAzureCredential(),
        config.azure_subscription_id,
        config.azure_resource_group,
        config.azure_ml_workspace,
    )
    console.print(f"deploying: {plan}")
    client.online_endpoints.begin_create_or_update(endpoint).result()
    client.online_deployments.begin_create_or_update(deployment).result()
    endpoint.traffic = {deployment.name: 100}
    client.online_endpoints.begin_create_or_update(endpoint).result()
    console.print(f"endpoint {endpoint.name} serves deployment {deployment.name}")
