"""Per-photo work as Dagster assets partitioned by photo shard, so it spreads over machines.

Why: on the full catalogue (84,916 training photos + 13,812 test photos) the frozen image
trunk and Tesseract are most of a training's cost, and both only depend on each photo. Each
asset partition handles the photos whose file name hashes to its shard; a backfill of all
shards is one run per shard, which a deployment's run launcher (Kubernetes: one pod per run,
deploy/dagster/dagster.yaml) or Celery executor spreads over workers. Results land in the
same content-keyed caches the models read (``state_dir/feature-cache``, ``state_dir/
ocr-cache``, on storage the workers share), so the training that follows finds them warm: the
encoder and views are those of the family the pipeline trains (params.yaml's
``train.model_family``, with its ``families`` section), so the cache keys are the ones its
training looks up.
"""

import hashlib
from pathlib import Path

# no `from __future__ import annotations`: dagster checks the context annotation itself
import dagster as dg
from dagster import AssetExecutionContext

from prodclass.data.layout import IMAGE_DIRS, ChallengeLayout

SHARDS = 8
photo_shards = dg.StaticPartitionsDefinition([str(i) for i in range(SHARDS)])


def shard_of(file_name: str, shards: int = SHARDS) -> int:
    """A photo's shard: sha1 of its file name modulo ``shards`` (stable across machines and
    runs, unlike Python's ``hash``; a new photo never moves an old one)."""
    return int(hashlib.sha1(file_name.encode()).hexdigest(), 16) % shards


def catalogue_photos(data_dir: Path) -> list[Path]:
    """Every photo of a challenge-layout folder (training and test photos), sorted."""
    layout = ChallengeLayout(data_dir)
    found: list[Path] = []
    for subset in IMAGE_DIRS:
        folder = layout.image_dir(subset)
        if folder.is_dir():
            found += folder.glob("*.jpg")
    return sorted(found)


class PhotoCaches(dg.ConfigurableResource):
    """Where the photos are and where their caches go; empty: the settings
    (PRODCLASS_DATA_DIR, PRODCLASS_STATE_DIR, PRODCLASS_PARAMS_FILE)."""

    data_dir: str = ""
    state_dir: str = ""
    params_file: str = ""

    def _settings(self):  # type: ignore[no-untyped-def]
        from prodclass.settings import get_settings

        return get_settings()

    def data_path(self) -> Path:
        return Path(self.data_dir) if self.data_dir else self._settings().data_dir

    def state_path(self) -> Path:
        return Path(self.state_dir) if self.state_dir else self._settings().state_dir

    def photos(self, shard: int) -> list[str]:
        return [str(p) for p in catalogue_photos(self.data_path()) if shard_of(p.name) == shard]

    def model(self):  # type: ignore[no-untyped-def]
        """An untrained classifier of the family the pipeline trains (params.yaml's
        ``train.model_family``) with its parameters: its encoder and views are what training
        reads, so its cache keys are the ones training looks up."""
        from prodclass.models.feature_cache import FeatureCache
        from prodclass.models.registry import create
        from prodclass.params import load_params

        params_file = Path(self.params_file) if self.params_file else self._settings().params_file
        params = load_params(params_file)
        family = params.train.model_family
        model = create(family, params.family_params(family))
        model.cache = FeatureCache.at(self.state_path() / "feature-cache")  # type: ignore[attr-defined]
        return model


@dg.asset(
    partitions_def=photo_shards,
    group_name="photo_caches",
    description="Frozen EfficientNet-Lite trunk activations of one shard's photos, with the "
    "encoder and views of the family the pipeline trains (params.yaml), in the feature cache "
    "its training reads.",
)
def photo_features(
    context: AssetExecutionContext, photo_caches: PhotoCaches
) -> dg.MaterializeResult:
    from prodclass.models.base import NoPhotoFeaturesError

    paths = photo_caches.photos(int(context.partition_key))
    model = photo_caches.model()
    try:
        store = model.cache_photo_features(paths) if paths else None
    except NoPhotoFeaturesError as exc:
        raise dg.Failure(
            f"params.yaml's train.model_family is {model.family}: nothing to cache ({exc})"
        ) from None
    return dg.MaterializeResult(
        metadata={
            "family": dg.MetadataValue.text(model.family),
            "photos": dg.MetadataValue.int(len(paths)),
            "entries_computed": dg.MetadataValue.int(model.cache.misses),
            "encoder": dg.MetadataValue.text(store.encoder_version if store else "-"),
        }
    )


@dg.asset(
    partitions_def=photo_shards,
    group_name="photo_caches",
    description="Words Tesseract reads on one shard's photos, in the OCR cache the models read.",
)
def photo_ocr(context: AssetExecutionContext, photo_caches: PhotoCaches) -> dg.MaterializeResult:
    from prodclass.cache_budget import megabytes
    from prodclass.data.ocr import read_photos
    from prodclass.settings import get_settings

    paths = photo_caches.photos(int(context.partition_key))
    # one Tesseract at a time per step: the executor runs steps (shards, assets) side by side
    cap = megabytes(get_settings().ocr_cache_max_mb)
    words = read_photos(paths, photo_caches.state_path() / "ocr-cache", workers=1, max_bytes=cap)
    return dg.MaterializeResult(
        metadata={
            "photos": dg.MetadataValue.int(len(paths)),
            "with_words": dg.MetadataValue.int(sum(bool(w) for w in words)),
        }
    )


photo_cache_assets = [photo_features, photo_ocr]
photo_caches_job = dg.define_asset_job(
    "photo_caches",
    selection=dg.AssetSelection.groups("photo_caches"),
    partitions_def=photo_shards,
    description="One photo shard's trunk activations and OCR; a backfill of all shards fills "
    "the caches of the whole catalogue, one run per shard.",
)
