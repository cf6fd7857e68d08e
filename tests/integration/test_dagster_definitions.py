"""The Dagster code location loads, its jobs cover the lifecycle in dvc.yaml's order, the
retraining sensor skips with a reason when nothing calls for a retraining, and a backfill of
the photo shards fills the same caches as one process."""

from __future__ import annotations

from multiprocessing import resource_tracker
from pathlib import Path

import dagster as dg
import numpy as np
import yaml
from tests.conftest import PROJECT_ROOT, copy_subset

from prodclass.data.layout import ChallengeLayout, read_features, read_labels
from prodclass.data.prepare import SplitParams, load_prepared, prepare
from prodclass.data.validate import validate
from prodclass.models.feature_cache import FeatureCache
from prodclass.models.registry import create
from prodclass.params import load_params
from prodclass.pipelines.definitions import (
    PIPELINE_FILES,
    STAGES,
    DvcProject,
    defs,
    photo_caches,
    retrain_when_needed,
)
from prodclass.pipelines.photo_shards import (
    PhotoCaches,
    catalogue_photos,
    photo_features,
    photo_shards,
    shard_of,
)
from prodclass.settings import get_settings


def test_the_code_location_loads_with_its_jobs_schedule_and_sensor():
    dg.Definitions.validate_loadable(defs)
    jobs = {job.name for job in defs.resolve_all_job_defs()}
    assert {"training", "retraining", "drift_check"} <= jobs
    assert defs.resolve_schedule_def("nightly_drift_check").cron_schedule == "0 2 * * *"
    assert defs.resolve_sensor_def("retrain_when_needed").job_name == "retraining"


def test_the_assets_are_the_dvc_stages_with_their_dependencies():
    stages = {}
    for name in PIPELINE_FILES:  # the data stages, then the model stages
        stages |= yaml.safe_load((PROJECT_ROOT / name).read_text())["stages"]
    assert list(STAGES) == list(stages)
    project = DvcProject(project_dir=str(PROJECT_ROOT))
    assert [project.target(s) for s in ("ingest", "prepare", "train", "register")] == [
        "ingest",
        "prepare",
        "models/dvc.yaml:train",
        "models/dvc.yaml:register",
    ]
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


def _labelled_with_photos(sample: Path, codes: int = 4, per_code: int = 6) -> list[str]:
    """Row ids of ``per_code`` products with a photo for each of the ``codes`` commonest
    product types of the sample."""
    layout = ChallengeLayout(sample)
    rows = read_features(layout.x_train).join(read_labels(layout.y_train))
    rows = rows[[layout.image_path(i, p).is_file() for i, p in zip(rows.imageid, rows.productid)]]
    common = rows["prdtypecode"].value_counts().index[:codes]
    return [r for code in common for r in rows.index[rows["prdtypecode"] == code][:per_code]]


def test_a_backfill_of_all_shards_caches_what_training_the_champion_reads(
    sample, tmp_path, monkeypatch
):
    """Every shard materialised by its own run of the photo_caches job (the first with the
    multiprocess executor: trunk activations and OCR as separate processes), with the
    project's params.yaml, on real labelled products: the feature cache holds what one process
    computes for all photos at once, and training the family params.yaml names (the champion's)
    on those products then finds every photo's features and words cached: it computes none
    itself."""
    data = copy_subset(sample, tmp_path / "data", _labelled_with_photos(sample))
    photos = sorted((data / "images" / "image_train").glob("*.jpg"))
    params_file = PROJECT_ROOT / "params.yaml"
    params = load_params(params_file)
    family = params.train.model_family
    spread = tmp_path / "spread"
    resource = PhotoCaches(data_dir=str(data), state_dir=str(spread), params_file=str(params_file))
    shard_lists = [resource.photos(int(k)) for k in photo_shards.get_partition_keys()]
    assert sorted(p for s in shard_lists for p in s) == sorted(str(p) for p in photos)
    assert sum(bool(s) for s in shard_lists) >= 5  # the work is really spread

    resources = {"resources": {"photo_caches": {"config": resource.model_dump()}}}
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        for key in photo_shards.get_partition_keys():
            # the first run as a deployment's worker runs it: each step a process of its own
            # (their start is most of a run's time); the others in the run's own process
            executor = "multiprocess" if key == "0" else "in_process"
            result = dg.execute_job(
                dg.reconstructable(photo_caches),
                instance,
                run_config=resources | {"execution": {"config": {executor: {}}}},
                tags={"dagster/partition": key},
            )
            assert result.success, key
            kinds = {event.event_type_value for event in result.all_events}
            assert ("STEP_WORKER_STARTED" in kinds) == (key == "0")  # steps in workers
        for asset in ("photo_features", "photo_ocr"):
            done = instance.get_materialized_partitions(dg.AssetKey(asset))
            assert done == set(photo_shards.get_partition_keys()), asset
    # the executor's multiprocessing started a resource tracker in this process; it would
    # outlive the test (and be reported as left running), so it is stopped here
    resource_tracker._resource_tracker._stop()

    # the trunk activations one process computes for all photos at once
    single = tmp_path / "single"
    model = PhotoCaches(data_dir=str(data), state_dir=str(single)).model()
    assert model.family == family
    model.cache_photo_features([str(p) for p in photos])
    mine = _files(single / "feature-cache")
    theirs = _files(spread / "feature-cache")
    assert mine.keys() == theirs.keys()
    assert sum(name.endswith(".npy") for name in mine) == len(photos)
    for name, data_bytes in mine.items():
        if name.endswith(".npy") and data_bytes != theirs[name]:
            # another batch composition may pick another kernel: float16 rounding only
            a, b = (
                np.load(single / "feature-cache" / name),
                np.load(spread / "feature-cache" / name),
            )
            np.testing.assert_allclose(a, b, rtol=1e-2, atol=2e-3)
        else:
            assert data_bytes == theirs[name], name
    assert len([p for p in (spread / "ocr-cache").rglob("*") if p.is_file()]) >= len(photos)

    # training the champion family on these products, on the state folder the backfill filled
    monkeypatch.setenv("PRODCLASS_STATE_DIR", str(spread))
    get_settings.cache_clear()
    try:
        before = {cache: set(_files(spread / cache)) for cache in ("feature-cache", "ocr-cache")}
        champion = create(family, params.family_params(family) | {"threads": 1, "fusion_folds": 2})
        champion.cache = FeatureCache.at(spread / "feature-cache")  # the default, counted here
        prepare(validate(data), tmp_path / "prepared", SplitParams())
        products = load_prepared(tmp_path / "prepared")
        assert (products["image_path"] != "").sum() == len(photos)
        champion.fit(products)
    finally:
        get_settings.cache_clear()
    assert champion.cache.misses == 0 and champion.cache.hits >= len(photos)
    for cache, names in before.items():
        assert set(_files(spread / cache)) == names, f"training added to the {cache}"


def test_the_photo_job_refuses_a_family_that_reads_no_photo_features(sample, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  model_family: tfidf-linear\n")
    resource = PhotoCaches(
        data_dir=str(sample), state_dir=str(tmp_path / "state"), params_file=str(params)
    )
    result = dg.materialize(
        [photo_features],
        partition_key="0",
        resources={"photo_caches": resource},
        raise_on_error=False,
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    said = failure.step_failure_data.error.message
    assert "train.model_family is tfidf-linear: nothing to cache" in said, said
    assert not (tmp_path / "state" / "feature-cache").exists()


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
