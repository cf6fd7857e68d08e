"""Whole-catalogue scoring as Dagster assets partitioned by photo shard, so it spreads over
machines as the photo work does (``photo_shards.py``).

Each partition scores the products whose photo file name hashes to its shard (the same
``shard_of``: a product is scored where its photo's features were cached) with the one
predictor, through ``serving/catalogue_scoring.py`` (chunked, resumable), into a Parquet file
of its own. ``catalogue_scores_file`` then joins the shards' files, in the CSV's order, into
one CSV or Parquet file; it refuses while a shard is missing or when shards scored with
another model or file. A backfill of ``catalogue_scoring`` is one run per shard, which a
deployment's run launcher spreads over workers; ``catalogue_scoring_merge`` runs last.
"""

from pathlib import Path

# no `from __future__ import annotations`: dagster checks the context annotation itself
import dagster as dg
from dagster import AssetExecutionContext

from prodclass.pipelines.photo_shards import SHARDS, photo_shards


class CatalogueScoring(dg.ConfigurableResource):
    """What to score and with which model; empty: the settings (PRODCLASS_DATA_DIR,
    PRODCLASS_MODEL_URI, PRODCLASS_STATE_DIR/catalogue-scores)."""

    data_dir: str = ""
    part: str = "test"
    model_uri: str = ""
    out_dir: str = ""
    output: str = ""  # the merged file (.csv or .parquet); empty: <out_dir>/<part>/scores.parquet
    top_k: int = 3
    chunk_size: int = 256

    def _settings(self):  # type: ignore[no-untyped-def]
        from prodclass.settings import get_settings

        return get_settings()

    def source(self):  # type: ignore[no-untyped-def]
        from prodclass.serving.catalogue_scoring import Source

        return Source(
            Path(self.data_dir) if self.data_dir else self._settings().data_dir, self.part
        )

    def folder(self) -> Path:
        root = (
            Path(self.out_dir) if self.out_dir else self._settings().state_dir / "catalogue-scores"
        )
        return root / self.part

    def shard_file(self, shard: int) -> Path:
        return self.folder() / f"shard-{shard}-of-{SHARDS}.parquet"

    def merged_file(self) -> Path:
        return Path(self.output) if self.output else self.folder() / "scores.parquet"

    def predictor(self):  # type: ignore[no-untyped-def]
        from prodclass.registry.tracking import configure_mlflow
        from prodclass.serving.predictor import Predictor

        uri = self.model_uri or self._settings().model_uri
        if not Path(uri).is_dir():  # a registry or run URI: the tracking store is needed
            configure_mlflow(self._settings())
        return Predictor.load(uri)


@dg.asset(
    partitions_def=photo_shards,
    group_name="catalogue_scoring",
    description="The top-k categories of one shard's products (by photo file name), scored "
    "with the serving predictor, chunked and resumable, in a Parquet file of the shard's own.",
)
def catalogue_scores(
    context: AssetExecutionContext, catalogue_scoring: CatalogueScoring
) -> dg.MaterializeResult:
    from prodclass.serving.catalogue_scoring import (
        ScoringConflictError,
        score_catalogue,
        work_folder,
    )

    shard = int(context.partition_key)
    out = catalogue_scoring.shard_file(shard)
    if out.exists() and not work_folder(out).exists():
        out.unlink()  # a new materialisation scores again (the model may have changed)
    try:
        result = score_catalogue(
            catalogue_scoring.predictor(),
            catalogue_scoring.source(),
            out,
            top_k=catalogue_scoring.top_k,
            chunk_size=catalogue_scoring.chunk_size,
            shard=(shard, SHARDS),
        )
    except (ScoringConflictError, ValueError, FileNotFoundError) as exc:
        raise dg.Failure(str(exc)) from None
    return dg.MaterializeResult(
        metadata={
            "file": dg.MetadataValue.path(str(out)),
            "products": dg.MetadataValue.int(result.products),
            "refused": dg.MetadataValue.int(result.refused),
            "resumed_chunks": dg.MetadataValue.int(result.resumed_chunks),
            "model": dg.MetadataValue.text(
                f"{result.model_uri} (version {result.model_version or '-'})"
            ),
        }
    )


@dg.asset(
    deps=[catalogue_scores],
    group_name="catalogue_scoring",
    description="Every shard's scores joined in the CSV's order into one CSV or Parquet file.",
)
def catalogue_scores_file(catalogue_scoring: CatalogueScoring) -> dg.MaterializeResult:
    from prodclass.serving.catalogue_scoring import merge_shards

    out = catalogue_scoring.merged_file()
    shards = [catalogue_scoring.shard_file(k) for k in range(SHARDS)]
    missing = [k for k, path in enumerate(shards) if not path.is_file()]
    if missing:
        raise dg.Failure(f"shards {missing} of {SHARDS} are not scored yet: run them first")
    try:
        products, refused = merge_shards(shards, out)
    except ValueError as exc:
        raise dg.Failure(str(exc)) from None
    return dg.MaterializeResult(
        metadata={
            "file": dg.MetadataValue.path(str(out)),
            "products": dg.MetadataValue.int(products),
            "refused": dg.MetadataValue.int(refused),
        }
    )


catalogue_scoring_assets = [catalogue_scores, catalogue_scores_file]
catalogue_scoring_job = dg.define_asset_job(
    "catalogue_scoring",
    selection=dg.AssetSelection.assets(catalogue_scores),
    partitions_def=photo_shards,
    description="One shard's products scored into its own file; a backfill of all shards "
    "scores the whole catalogue, one run per shard.",
)
catalogue_scoring_merge_job = dg.define_asset_job(
    "catalogue_scoring_merge",
    selection=dg.AssetSelection.assets(catalogue_scores_file),
    description="The shards' files joined into one, in the CSV's order.",
)
