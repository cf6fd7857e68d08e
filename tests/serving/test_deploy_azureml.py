"""`prodclass deploy azureml --dry-run`: the endpoint, deployment and environment YAML load with
the azure-ai-ml SDK's own loaders and are assembled with a real registered model (no network);
a real deployment without a workspace configured is refused with what to set."""

from __future__ import annotations

from typer.testing import CliRunner

from prodclass.cli.main import app
from tests.conftest import PROJECT_ROOT

runner = CliRunner()


def test_dry_run_assembles_the_deployment_with_the_registered_model(served, monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT)
    model = f"models:/{served.settings.registered_model_name}/{served.multimodal_version}"
    result = runner.invoke(app, ["deploy", "azureml", "--model", model, "--dry-run"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "endpoint prodclass (key), deployment blue on Standard_DS3_v2 x1" in out
    assert f"(version {served.multimodal_version})" in out
    assert "scoring script deploy/azureml/score.py" in out


def test_deploying_without_a_workspace_says_what_to_set(served, monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT)
    for name in ("SUBSCRIPTION_ID", "RESOURCE_GROUP", "ML_WORKSPACE"):
        monkeypatch.delenv(f"PRODCLASS_AZURE_{name}", raising=False)
    model = f"models:/{served.settings.registered_model_name}/{served.multimodal_version}"
    result = runner.invoke(app, ["deploy", "azureml", "--model", model])
    assert result.exit_code == 1
    assert "PRODCLASS_AZURE_SUBSCRIPTION_ID" in " ".join(result.output.split())
