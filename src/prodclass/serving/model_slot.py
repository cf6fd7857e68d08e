"""The model being served, and hot swaps to another version.

A load happens in a background thread: the new version is loaded, given a smoke prediction
(a text product and a photo product), and only then swapped in by one reference assignment.
Requests keep using the predictor they started with, so no request fails or waits for a load;
a version that fails to load or to answer is refused and the old one keeps serving.

Each model served is also copied to the local ``ModelCache``; a load that may fall back
(the one at start, the watcher's retries) serves that copy when the registry does not answer.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from prodclass.serving import metrics
from prodclass.serving.model_cache import ModelCache, registry_problem
from prodclass.serving.predictor import ModelIdentity, Predictor, ProductInput

log = logging.getLogger(__name__)


class LoadInProgressError(RuntimeError):
    """Another version is being loaded; one load at a time."""


@dataclass
class LoadStatus:
    uri: str
    version: str | None
    state: str  # loading | serving | failed | replaced
    started: float
    finished: float | None = None
    error: str | None = None
    source: str = "registry"  # or "cache": the local copy, the registry did not answer

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def smoke_products() -> list[ProductInput]:
    """A text-only and a photo-only product: a model that cannot answer both is not served."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, size=(96, 96, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return [
        ProductInput(designation="Produit de test", description="vérification du modèle"),
        ProductInput(image=buffer.getvalue()),
    ]


def smoke_test(predictor: Predictor) -> None:
    """Raise unless the predictor gives one distribution over its codes per smoke product."""
    answers = predictor.predict(smoke_products(), top_k=len(predictor.model.classes_))
    for answer in answers:
        total = sum(score.probability for score in answer.top)
        if not answer.top or abs(total - 1.0) > 1e-3:
            raise RuntimeError(f"smoke prediction is not a distribution (sums to {total:.4f})")


class ModelSlot:
    """Holds the serving predictor; ``request_load`` swaps in another in the background."""

    def __init__(
        self,
        torch_threads: int = 1,
        max_image_bytes: int = 10 * 1024 * 1024,
        cache: ModelCache | None = None,
        tracking_uri: str = "",
        advertise: bool = True,
    ) -> None:
        self.torch_threads = torch_threads
        self.advertise = advertise  # the serving model's gauge: off for versions kept aside
        self.max_image_bytes = max_image_bytes
        self.cache = cache
        self.tracking_uri = tracking_uri
        self._current: Predictor | None = None
        self._lock = threading.Lock()
        self._loading: threading.Thread | None = None
        self.last_load: LoadStatus | None = None

    @property
    def current(self) -> Predictor | None:
        return self._current

    @property
    def loading(self) -> bool:
        return self._loading is not None and self._loading.is_alive()

    def request_load(
        self, uri: str, version: str | None = None, fallback: bool = False
    ) -> LoadStatus:
        """Start loading ``uri`` in the background; LoadInProgressError if a load is running.

        ``fallback``: when the registry does not answer, serve the cached copy of the last
        model served instead (at start); without a copy the load fails saying so."""
        with self._lock:
            if self.loading:
                running = self.last_load.uri if self.last_load else "?"
                raise LoadInProgressError(f"a load of {running} is in progress; try again later")
            status = LoadStatus(uri=uri, version=version, state="loading", started=time.time())
            self.last_load = status
            self._loading = threading.Thread(
                target=self._load, args=(status, fallback), name="model-load", daemon=True
            )
            self._loading.start()
        return status

    def wait(self, timeout: float | None = None) -> LoadStatus | None:
        """Block until the running load (if any) ends; tests and the CLI use it."""
        thread = self._loading
        if thread is not None:
            thread.join(timeout)
        return self.last_load

    def close(self) -> None:
        """Stop advertising the served model (the process is shutting down)."""
        if self._current is not None and self.advertise:
            metrics.MODEL_INFO.remove(*info_labels(self._current))
        self._current = None

    def registry_problem(self) -> str | None:
        """Why the model registry does not answer now, or None (see ``model_cache.py``)."""
        return registry_problem(self.tracking_uri) if self.tracking_uri else None

    def _fetch(self, status: LoadStatus, fallback: bool) -> Predictor:
        """From the registry; from the cache when ``fallback`` and the registry is down."""
        problem = self.registry_problem()
        if problem is None:
            return Predictor.load(status.uri, max_image_bytes=self.max_image_bytes)
        if not fallback:
            raise RuntimeError(f"model registry unreachable ({problem})")
        cached = self.cache.last() if self.cache is not None else None
        if cached is None:
            raise RuntimeError(f"model registry unreachable ({problem}) and no cached model")
        log.warning(
            "model registry unreachable (%s): serving the cached copy of %s version %s (%s)",
            problem,
            cached.uri,
            cached.version,
            cached.folder,
        )
        status.source = "cache"
        return Predictor.load_folder(
            cached.folder, cached.uri, cached.version, "cache", max_image_bytes=self.max_image_bytes
        )

    def _load(self, status: LoadStatus, fallback: bool = False) -> None:
        step = "cannot load it"  # the error says which step failed: a bare KeyError does not
        try:
            predictor = self._fetch(status, fallback)
            predictor.model.inference_threads = self.torch_threads
            step = "smoke prediction failed"
            smoke_test(predictor)
        except Exception as exc:  # any failure: refuse the version, keep the old one
            status.state, status.error = "failed", f"{step}: {type(exc).__name__}: {exc}"
            status.finished = time.time()
            metrics.MODEL_LOAD_FAILURES.inc()
            log.error("model %s refused: %s", status.uri, status.error)
            return
        previous, self._current = self._current, predictor  # the swap: one assignment
        status.version = predictor.model_version or status.version
        status.state, status.finished = "serving", time.time()
        metrics.MODEL_LOADS.inc()
        if self.advertise:
            if previous is not None:
                metrics.MODEL_INFO.remove(*info_labels(previous))
            metrics.MODEL_INFO.labels(*info_labels(predictor)).set(1)
        log.info(
            "serving model %s (version %s, from the %s) after %.1f s",
            status.uri,
            status.version,
            status.source,
            status.finished - status.started,
        )
        if predictor.source == "registry" and predictor.model_dir and self.cache is not None:
            try:
                self.cache.save(
                    predictor.model_uri,
                    predictor.model_version,
                    predictor.family,
                    predictor.model_dir,
                )
            except OSError as exc:  # serving goes on; only a restart in an outage would miss it
                log.warning("could not keep a local copy of model %s: %s", status.uri, exc)


def info_labels(served: Predictor | ModelIdentity) -> tuple[str, str, str]:
    """The labels of ``prodclass_model_info`` for a model served here or by an endpoint."""
    return served.model_version or "", served.family, served.model_uri
