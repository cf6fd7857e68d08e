"""The Dagster code location loads, its jobs cover the lifecycle in dvc.yaml's order, and the
retraining sensor skips with a reason when nothing calls for a retraining."""

from __future__ import annotations

import dagster as dg
import yaml
from tests.conftest import PROJECT_ROOT

from prodclass.pipelines.definitions import STAGES, defs, retrain_when_needed
from prodclass.settings import get_settings


def test_the_code_location_loads_with_its_jobs_schedule_and_sensor():
    dg.Definitions.validate_loadable(defs)
    jobs = {job.name for job in defs.resolve_all_job_defs()}
    assert {"training", "retraining", "drift_check"} <= jobs
    assert defs.resolve_schedule_def("nightly_drift_check").cron_schedule == "0 2 * * *"
    assert defs.resolve_sensor_def("retrain_when_needed").job_name == "retraining"


def test_the_assets_are_the_dvc_stages_with_their_dependencies():
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    assert list(STAGES) == list(stages)
    for stage, upstream in STAGES.items():
        outs = {d for u in upstream for d in _outs(stages[u])}
        assert outs <= set(stages[stage].get("deps", [])) | {"reports/train.json"}, stage


def _outs(stage: dict) -> list[str]:
    return [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", [])]


def test_the_sensor_skips_when_nothing_is_new(tmp_path, monkeypatch):
    monkeypatch.setenv("PRODCLASS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("PRODCLASS_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    try:
        result = retrain_when_needed(dg.build_sensor_context())
    finally:
        get_settings.cache_clear()
    assert isinstance(result, dg.SkipReason)
    assert "too few new reviewed labels" in result.skip_message
