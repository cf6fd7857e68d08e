"""What the API's routes share for the life of the process, built from the settings."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from sqlalchemy.exc import OperationalError

from prodclass.db.encryption import EncryptionError, check_keys
from prodclass.db.session import check_schema
from prodclass.photo_store import PhotoStore, open_photo_store
from prodclass.serving.ab_testing import AbRouter
from prodclass.serving.login_throttle import LoginThrottle
from prodclass.serving.model_cache import ModelCache, registry_problem
from prodclass.serving.model_slot import ModelSlot
from prodclass.serving.prediction_log import PredictionLog
from prodclass.serving.prediction_queue import PredictionQueue
from prodclass.serving.rate_limit import RateLimiter
from prodclass.serving.remote_predictor import EndpointSlot
from prodclass.serving.retraining import Retrainer
from prodclass.serving.security import RevocationList, TokenIssuer, check_production_secrets
from prodclass.serving.shadow import ShadowRunner
from prodclass.serving.shared_revocations import SharedRevocations
from prodclass.serving.shared_state import SharedState
from prodclass.serving.similarity import CatalogueIndex
from prodclass.serving.version_slots import VersionSlots
from prodclass.serving.watcher import Watcher
from prodclass.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    slot: ModelSlot | EndpointSlot  # a model of this process, or a scoring endpoint's
    queue: PredictionQueue
    prediction_log: PredictionLog
    photos: PhotoStore  # what clients sent: this machine's folder or a bucket replicas share
    limiter: RateLimiter
    tokens: TokenIssuer
    revocations: RevocationList
    login_throttle: LoginThrottle
    retrainer: Retrainer  # asks the Dagster instance for retraining runs
    watcher: Watcher
    shared: SharedState  # Redis (PRODCLASS_REDIS_URL) or this process's memory
    ab: AbRouter  # the live A/B test, the versions served beside the champion, shadowing
    # the catalogue index of the serving version, loaded on first use (routes/similarity.py)
    similarity_index: CatalogueIndex | None = None
    index_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def db_url(self) -> str:
        return self.settings.db_url

    @classmethod
    def start(cls, settings: Settings) -> Services:
        """Check the database schema, start the workers and the log writer, begin loading the
        configured model (in the background: /health answers at once, /ready once loaded;
        the local copy of the last model served when the registry is down)."""
        check_production_secrets(settings)  # before anything starts: refuse weak secrets
        try:
            check_schema(settings.db_url)
        except OperationalError as exc:  # down now: predictions still work, /ready says so
            log.warning("database unreachable at start: %s", exc.orig)
        _connect_registry(settings)
        secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        if secret is None:
            log.warning("PRODCLASS_JWT_SECRET is unset: tokens are signed by a per-process key")
        try:
            check_keys(settings)
        except EncryptionError as exc:  # development: the API runs, emails answer 503 + this
            log.warning("user emails can be neither stored nor shown: %s", exc)
        slot = _serving_slot(settings)
        shared = SharedState.from_settings(settings)
        photos = open_photo_store(settings)
        log.info("photos clients send are kept in %s", photos.describe())
        log.info("sign-in failures, rate limits and revocations shared in %s", shared.describe())
        prediction_log = PredictionLog(
            settings.db_url,
            photos,
            settings.state_dir / "prediction-log-spill.jsonl",
            flush_seconds=settings.prediction_log_flush_seconds,
            memory_limit=settings.prediction_log_memory_limit,
        )
        versions = VersionSlots(
            settings.registered_model_name,
            settings.api_version_slots,
            settings.api_version_load_seconds,
            settings.api_torch_threads,
            settings.api_max_upload_bytes,
            settings.tracking_uri,
        )
        revocations = RevocationList(
            settings.db_url, shared=SharedRevocations(shared) if shared.client else None
        )
        services = cls(
            settings=settings,
            slot=slot,
            queue=PredictionQueue(
                slot,
                workers=settings.api_predict_workers,
                max_batch_size=settings.api_max_batch_size,
                max_wait_ms=settings.api_max_batch_wait_ms,
                limit=settings.api_queue_limit,
            ),
            prediction_log=prediction_log,
            photos=photos,
            limiter=RateLimiter(
                settings.api_rate_limit_per_minute, settings.api_rate_limit_burst, shared
            ),
            tokens=TokenIssuer(
                secret,
                settings.jwt_expire_minutes,
                settings.jwt_issuer,
                settings.jwt_audience,
                revocations,
            ),
            revocations=revocations,
            login_throttle=LoginThrottle(
                settings.login_max_failures, settings.login_lockout_seconds, shared
            ),
            retrainer=Retrainer.from_settings(settings),
            watcher=Watcher(
                slot,
                settings.model_uri,
                settings.db_url,
                # an endpoint's model is its deployments' choice: no alias to follow here
                settings.model_poll_seconds if isinstance(slot, ModelSlot) else 0.0,
                settings.monitoring_refresh_seconds,
            ),
            shared=shared,
            ab=AbRouter(
                settings.db_url,
                settings.ab_cache_seconds,
                versions,
                ShadowRunner(prediction_log, settings.ab_shadow_queue_limit),
            ),
        )
        services.prediction_log.start()
        revocations.start()
        services.watcher.start()
        services.ab.start()
        return services

    def stop(self) -> None:
        self.revocations.stop()
        self.watcher.stop()
        self.queue.stop()
        self.ab.close()
        self.prediction_log.stop()
        self.slot.close()
        self.shared.close()
        self.retrainer.close()


def _serving_slot(settings: Settings) -> ModelSlot | EndpointSlot:
    """What predicts: the scoring endpoint at PRODCLASS_SCORING_URL, else the model at
    PRODCLASS_MODEL_URI, loaded in the background (the local copy of the last model served
    when the registry is down)."""
    if settings.scoring_url:
        return EndpointSlot.start(settings)
    slot = ModelSlot(
        settings.api_torch_threads,
        settings.api_max_upload_bytes,
        cache=ModelCache(settings.state_dir / "model-cache"),
        tracking_uri=settings.tracking_uri,
    )
    slot.request_load(settings.model_uri, fallback=True)
    return slot


def _connect_registry(settings: Settings) -> None:
    """Point MLflow at the registry. When it does not answer, only set its address (MLflow's
    own retries would hold the start for minutes): the model comes from the local cache and
    the watcher loads from the registry once it is back."""
    import mlflow

    from prodclass.registry.tracking import configure_mlflow

    problem = registry_problem(settings.tracking_uri)
    if problem is None:
        try:
            configure_mlflow(settings)
            return
        except Exception as exc:  # noqa: BLE001 (any MLflow failure: serve what we can)
            problem = f"{type(exc).__name__}: {exc}"
    log.warning("model registry unavailable at start: %s", problem)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
