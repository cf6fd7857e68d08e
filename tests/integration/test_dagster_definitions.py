"""The Dagster code location loads, its jobs cover the lifecycle in dvc.yaml's order, the
retraining sensor skips with a reason when nothing calls for a retraining, and a backfill of
the photo shards fills the same caches as one process."""

from __future__ import annotations

from multiprocessing import resource_tracker
from pathlib import Path

import dagster as dg
import numpy as np
import yaml
from tests.conftest import PROJECT_ROOT

from prodclass.data.ocr import read_photos
from prodclass.models.feature_cache import FeatureCache
from prodclass.models.registry import create
from prodclass.pipelines.definitions import STAGES, defs, photo_caches, retrain_when_needed
from prodclass.pipelines.photo_shards import PhotoCaches, catalogue_photos, photo_shards, shard_of
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


# ---- photo shards ----------------------------------------------------------------------------
def test_photo_caches_are_assets_partitioned_by_photo_shard():
    job = photo_caches()
    assert job.partitions_def == photo_shards
    assert photo_shards.get_partition_keys() == [str(i) for i in range(8)]
    keys = {key.to_user_string() for key in job.asset_layer.executable_asset_keys}
    assert keys == {"photo_features", "photo_ocr"}
    lifecycle = defs.resolve_job_def("training").asset_layer.executable_asset_keys
    assert not {k.to_user_string() for k in lifecycle} & keys  # the DVC lifecycle is unchanged


def test_a_photo_shard_follows_the_file_name_only(sample):
    names = [p.name for p in catalogue_photos(sample)]
    assert len(names) > 1000
    shards = [shard_of(n) for n in names]
    assert shards == [shard_of(n) for n in names]  # stable: sha1, not Python's salted hash
    counts = np.bincount(shards, minlength=8)
    assert counts.min() > 0.8 * len(names) / 8  # spread evenly enough to balance workers


def test_a_backfill_of_all_shards_fills_the_caches_one_process_fills(sample, tmp_path):
    """Every shard materialised by its own run of the photo_caches job, each run with the
    multiprocess executor (trunk activations and OCR as separate processes), on a real subset;
    the caches hold byte for byte what one process computes for all photos at once."""
    data = tmp_path / "data" / "images" / "image_train"
    data.mkdir(parents=True)
    photos = sorted((sample / "images" / "image_train").glob("*.jpg"))[:24]
    for photo in photos:
        (data / photo.name).symlink_to(photo)
    params = tmp_path / "params.yaml"  # lite0: the cheaper encoder, for a quick test
    params.write_text("families:\n  multimodal-effnet:\n    variant: efficientnet-lite0\n")
    spread = tmp_path / "spread"
    resource = PhotoCaches(
        data_dir=str(tmp_path / "data"), state_dir=str(spread), params_file=str(params)
    )
    shard_lists = [resource.photos(int(k)) for k in photo_shards.get_partition_keys()]
    assert sorted(p for s in shard_lists for p in s) == sorted(str(data / p.name) for p in photos)
    assert sum(bool(s) for s in shard_lists) >= 5  # the work is really spread

    run_config = {
        "execution": {"config": {"multiprocess": {"max_concurrent": 2}}},
        "resources": {"photo_caches": {"config": resource.model_dump()}},
    }
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        for key in photo_shards.get_partition_keys():
            result = dg.execute_job(
                dg.reconstructable(photo_caches),
                instance,
                run_config=run_config,
                tags={"dagster/partition": key},
            )
            assert result.success, key
            kinds = {event.event_type_value for event in result.all_events}
            assert "STEP_WORKER_STARTED" in kinds  # steps ran in worker processes
        for asset in ("photo_features", "photo_ocr"):
            done = instance.get_materialized_partitions(dg.AssetKey(asset))
            assert done == set(photo_shards.get_partition_keys()), asset
    # the executor's multiprocessing started a resource tracker in this process; it would
    # outlive the test (and be reported as left running), so it is stopped here
    resource_tracker._resource_tracker._stop()

    # the same work in this process, all photos at once
    single = tmp_path / "single"
    model = create("multimodal-effnet", {"variant": "efficientnet-lite0"})
    model.cache = FeatureCache(single / "feature-cache")
    paths = [str(data / p.name) for p in photos]
    model.cache_photo_features(paths)
    read_photos(paths, single / "ocr-cache", workers=1)

    for cache in ("feature-cache", "ocr-cache"):
        mine = _files(single / cache)
        theirs = _files(spread / cache)
        assert mine.keys() == theirs.keys(), cache
        expected = 2 * len(photos) if cache == "feature-cache" else len(photos)
        assert sum(name.endswith((".npy", ".txt")) for name in mine) >= expected
        for name, data_bytes in mine.items():
            if name.endswith(".npy") and data_bytes != theirs[name]:
                # another batch composition may pick another kernel: float16 rounding only
                a, b = np.load(single / cache / name), np.load(spread / cache / name)
                np.testing.assert_allclose(a, b, rtol=1e-2, atol=2e-3)
            else:
                assert data_bytes == theirs[name], name


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
