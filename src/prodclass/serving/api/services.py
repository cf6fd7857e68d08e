"""What the API's routes share for the life of the process, built from the settings."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from sqlalchemy.exc import OperationalError

from prodclass.db.session import check_schema
from prodclass.serving.model_slot import ModelSlot
from prodclass.serving.prediction_log import PredictionLog
from prodclass.serving.prediction_queue import PredictionQueue
from prodclass.serving.rate_limit import RateLimiter
from prodclass.serving.retraining import Retrainer
from prodclass.serving.security import TokenIssuer
from prodclass.serving.similarity import CatalogueIndex
from prodclass.serving.watcher import Watcher
from prodclass.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    slot: ModelSlot
    queue: PredictionQueue
    prediction_log: PredictionLog
    limiter: RateLimiter
    tokens: TokenIssuer
    retrainer: Retrainer
    watcher: Watcher
    # the catalogue index of the serving version, loaded on first use (routes/similarity.py)
    similarity_index: CatalogueIndex | None = None
    index_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def db_url(self) -> str:
        return self.settings.db_url

    @classmethod
    def start(cls, settings: Settings) -> Services:
        """Check the database schema, start the workers and the log writer, begin loading the
        configured model (in the background: /health answers at once, /ready once loaded)."""
        from prodclass.registry.tracking import configure_mlflow

        try:
            check_schema(settings.db_url)
        except OperationalError as exc:  # down now: predictions still work, /ready says so
            log.warning("database unreachable at start: %s", exc.orig)
        configure_mlflow(settings)
        secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        if secret is None:
            log.warning("PRODCLASS_JWT_SECRET is unset: tokens are signed by a per-process key")
        slot = ModelSlot(settings.api_torch_threads, settings.api_max_upload_bytes)
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
            prediction_log=PredictionLog(
                settings.db_url,
                settings.upload_dir,
                settings.state_dir / "prediction-log-spill.jsonl",
                flush_seconds=settings.prediction_log_flush_seconds,
                memory_limit=settings.prediction_log_memory_limit,
            ),
            limiter=RateLimiter(settings.api_rate_limit_per_minute, settings.api_rate_limit_burst),
            tokens=TokenIssuer(secret, settings.jwt_expire_minutes),
            retrainer=Retrainer(settings.retrain_command, settings.state_dir / "retraining"),
            watcher=Watcher(
                slot,
                settings.model_uri,
                settings.db_url,
                settings.model_poll_seconds,
                settings.monitoring_refresh_seconds,
            ),
        )
        services.prediction_log.start()
        slot.request_load(settings.model_uri)
        services.watcher.start()
        return services

    def stop(self) -> None:
        self.watcher.stop()
        self.queue.stop()
        self.prediction_log.stop()
        self.slot.close()
