"""The predictor of an API whose model runs elsewhere: an Azure ML online endpoint serving
``deploy/azureml/score.py``.

With ``PRODCLASS_SCORING_URL`` set the API loads no model. Its routes check products as
always (the same ``check_product`` as a local model), then ``RemotePredictor.predict`` posts
them to the endpoint as the batch JSON score.py's ``run()`` reads and turns the answer back
into ``Prediction`` objects, each naming the model that answered (two deployments may share an
endpoint's traffic). A call is bounded: a timeout, a few retries with exponential backoff on
5xx, 429 and dropped connections (a 4xx is the request's or the key's fault: never retried),
then ``ScoringTimeoutError`` (the API answers 504) or ``ScoringEndpointError`` (502), each
with the reason. Features that read the model itself (vectors of catalogue search, photo
search by a phrase, product similarity) raise ``RemoteModelError`` (409).
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from typing import Any, Literal

import httpx
import numpy as np
from pydantic import BaseModel, Field, ValidationError

from prodclass.serving import metrics
from prodclass.serving.model_slot import LoadStatus, info_labels
from prodclass.serving.predictor import (
    CategoryScore,
    Embedding,
    ModelIdentity,
    Prediction,
    ProductInput,
    check_product,
)
from prodclass.settings import Settings

log = logging.getLogger(__name__)

PROBE_SECONDS = 5.0  # how long an answer (or a failure) of the endpoint stands for /ready
BACKOFF_CAP_SECONDS = 30.0  # the longest wait between two attempts, Retry-After included
# what /ready and the start ask the endpoint: one text product, the smallest real prediction
PROBE_BODY = {"products": [{"designation": "Produit de test", "description": "vérification"}]}


class ScoringEndpointError(RuntimeError):
    """The scoring endpoint answered an error or an answer that is no prediction, or could not
    be reached (the API answers 502 with this reason)."""


class ScoringTimeoutError(ScoringEndpointError):
    """The scoring endpoint did not answer in time (504)."""


class RemoteModelError(RuntimeError):
    """A feature that needs the model inside this process, asked of an API whose model is a
    scoring endpoint's (409)."""


# ---- the endpoint's answer, as score.py writes it (the API's batch answer) -----------------
class _ModelBlock(BaseModel):
    family: str
    version: str | None = None
    uri: str = ""
    name: str | None = None


class _EmbeddingBlock(BaseModel):
    modality: Literal["text", "image"]
    dimension: int
    values: list[float]
    indices: list[int] | None = None
    shared_space: bool


class _PredictionBlock(BaseModel):
    top: list[CategoryScore] = Field(min_length=1)
    inputs: str
    embeddings: list[_EmbeddingBlock] | None = None


class _Answer(BaseModel):
    model: _ModelBlock
    predictions: list[_PredictionBlock]


class RemotePredictor:
    """``Predictor``'s interface (``check``, ``predict``, ``model_uri``, ``model_version``,
    ``family``), answered by the scoring endpoint at ``url``. Thread-safe: the API's
    prediction workers share one connection pool."""

    source = "endpoint"  # where the model came from, as /ready and /models/current say
    model_dir = None

    def __init__(
        self,
        url: str,
        key: str | None = None,
        timeout_seconds: float = 30.0,
        retries: int = 2,
        backoff_seconds: float = 0.5,
        max_image_bytes: int = 10 * 1024 * 1024,
    ) -> None:
        self.url = url
        self.timeout_seconds = timeout_seconds
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.max_image_bytes = max_image_bytes
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"  # what Azure ML endpoints expect
        self._client = httpx.Client(timeout=timeout_seconds, headers=headers)
        # the model the endpoint named last (until it answers: its URL, family unknown)
        self.identity = ModelIdentity(url, None, "unknown")
        self._checked = 0.0  # monotonic time of the endpoint's last answer or failure
        self._problem: str | None = "the scoring endpoint has not answered yet"
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> RemotePredictor:
        key = settings.scoring_key.get_secret_value() if settings.scoring_key else None
        return cls(
            str(settings.scoring_url),
            key,
            settings.scoring_timeout_seconds,
            settings.scoring_retries,
            settings.scoring_backoff_seconds,
            settings.api_max_upload_bytes,
        )

    # ---- what routes and reports read, as of a local Predictor -----------------------------
    @property
    def model_uri(self) -> str:
        return self.identity.model_uri

    @property
    def model_version(self) -> str | None:
        return self.identity.model_version

    @property
    def model_name(self) -> str | None:
        return self.identity.model_name

    @property
    def family(self) -> str:
        return self.identity.family

    def close(self) -> None:
        self._client.close()

    # ---- predictions -----------------------------------------------------------------------
    def check(self, product: ProductInput, position: int = 0) -> tuple[str, str | None]:
        """The API's own checks, before anything is sent (a bad product is a 422 here)."""
        return check_product(product, position, self.max_image_bytes)

    def predict(
        self, products: Sequence[ProductInput], top_k: int = 5, embed: bool = False
    ) -> list[Prediction]:
        """Top-k categories of each product from the endpoint, in order (with ``embed``, the
        vectors the endpoint's model gives)."""
        if not products:
            return []
        hashes = [self.check(product, i)[1] for i, product in enumerate(products)]
        body: dict[str, Any] = {
            "products": [_product_json(product) for product in products],
            "top_k": max(1, min(top_k, 27)),
        }
        if embed:
            body["return_embedding"] = True
        answer = self._answer(self._post(body, self.retries), len(products))
        identity = self._seen(answer.model)
        return [
            Prediction(
                top=list(block.top),
                inputs=block.inputs,
                image_sha256=sha,
                product_id=product.product_id,
                embeddings=[Embedding(**vars(e)) for e in block.embeddings]
                if embed and block.embeddings is not None
                else None,
                served_by=identity,
            )
            for product, sha, block in zip(products, hashes, answer.predictions)
        ]

    def readiness_problem(self) -> str | None:
        """Why the endpoint cannot predict now, or None; asks it (one text product, no
        retries) unless a call answered or failed in the last few seconds."""
        with self._lock:
            fresh = time.monotonic() - self._checked < PROBE_SECONDS
        if not fresh:
            with suppress(ScoringEndpointError):  # _failed noted why
                self._seen(self._answer(self._post(PROBE_BODY, retries=0), 1).model)
        return self._problem

    # ---- features that need the model in this process --------------------------------------
    def _local_only(self, feature: str) -> RemoteModelError:
        return RemoteModelError(
            f"{feature} needs the model inside the API; this API forwards predictions to the "
            f"scoring endpoint {self.url} (PRODCLASS_SCORING_URL)"
        )

    @property
    def model(self) -> Any:
        raise self._local_only("reading the model's internals")

    def embed(self, products: Sequence[ProductInput]) -> dict[str, Any]:
        raise self._local_only("product vectors for similarity")

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise self._local_only("searching photos by a phrase")

    def shared_space_problem(self) -> str | None:
        raise self._local_only("searching photos by a phrase")

    # ---- the HTTP exchange -----------------------------------------------------------------
    def _post(self, body: dict[str, Any], retries: int) -> Any:
        """The endpoint's JSON answer to ``body``; retried on 5xx, 429 and lost connections
        with exponential backoff (Retry-After when the endpoint gives one)."""
        attempts = 1 + retries
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self._client.post(self.url, json=body)
            except httpx.TimeoutException as exc:
                if isinstance(exc, httpx.ConnectTimeout) and not last:
                    self._wait(attempt, None, f"connect timeout: {exc}")
                    continue
                raise self._failed(
                    ScoringTimeoutError(
                        f"the scoring endpoint {self.url} did not answer within "
                        f"{self.timeout_seconds:g} s ({type(exc).__name__})"
                    )
                ) from None
            except httpx.TransportError as exc:  # refused, reset, dropped mid-answer
                if not last:
                    self._wait(attempt, None, f"{type(exc).__name__}: {exc}")
                    continue
                raise self._failed(
                    ScoringEndpointError(
                        f"the scoring endpoint {self.url} cannot be reached after {attempts} "
                        f"attempt(s): {type(exc).__name__}: {exc}"
                    )
                ) from None
            code = response.status_code
            if (code >= 500 or code == 429) and not last:
                self._wait(attempt, response, f"answered {code}")
                continue
            if code >= 400:
                raise self._failed(self._status_error(response, attempts))
            try:
                return response.json()
            except ValueError:
                raise self._failed(
                    ScoringEndpointError(
                        f"the scoring endpoint's answer is not JSON: {_excerpt(response)}"
                    )
                ) from None
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _status_error(self, response: httpx.Response, attempts: int) -> ScoringEndpointError:
        code = response.status_code
        if code in (408, 504):  # the endpoint's own request timeout (Azure ML: 408)
            return ScoringTimeoutError(
                f"the scoring endpoint {self.url} timed out ({code}): {_excerpt(response)}"
            )
        tried = f" after {attempts} attempt(s)" if code >= 500 or code == 429 else ""
        return ScoringEndpointError(
            f"the scoring endpoint {self.url} answered {code}{tried}: {_excerpt(response)}"
        )

    def _wait(self, attempt: int, response: httpx.Response | None, why: str) -> None:
        delay = self.backoff_seconds * 2**attempt
        retry_after = response.headers.get("Retry-After", "") if response is not None else ""
        if retry_after.strip().isdigit():
            delay = max(delay, float(retry_after))
        delay = min(delay, BACKOFF_CAP_SECONDS)
        log.warning("scoring endpoint %s: %s; retrying in %.2f s", self.url, why, delay)
        time.sleep(delay)

    def _answer(self, payload: Any, expected: int) -> _Answer:
        """The endpoint's answer read as predictions; its ``{"error": reason}`` (a request
        score.py refused) and anything else that is no answer to ``expected`` products raise
        ScoringEndpointError."""
        if isinstance(payload, dict) and isinstance(payload.get("error"), str):
            raise self._failed(
                ScoringEndpointError(
                    f"the scoring endpoint refused the request: {payload['error']}"
                ),
                answered=True,
            )
        try:
            answer = _Answer.model_validate(payload)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "the answer"
            raise self._failed(
                ScoringEndpointError(
                    f"the scoring endpoint's answer is no prediction ({where}: {first['msg']})"
                )
            ) from None
        if len(answer.predictions) != expected:
            raise self._failed(
                ScoringEndpointError(
                    f"the scoring endpoint answered {len(answer.predictions)} predictions "
                    f"for {expected} products"
                )
            )
        return answer

    def _failed(self, error: ScoringEndpointError, answered: bool = False) -> ScoringEndpointError:
        """Note the failure for /ready (a refused request still means the endpoint answers)."""
        with self._lock:
            self._checked = time.monotonic()
            self._problem = None if answered else str(error)
        return error

    def _seen(self, block: _ModelBlock) -> ModelIdentity:
        """The model the endpoint named; the Prometheus model gauge follows it."""
        identity = ModelIdentity(block.uri or self.url, block.version, block.family, block.name)
        with self._lock:
            self._checked, self._problem = time.monotonic(), None
            previous, self.identity = self.identity, identity
        if identity != previous:
            if previous.family != "unknown":
                metrics.MODEL_INFO.remove(*info_labels(previous))
            metrics.MODEL_INFO.labels(*info_labels(identity)).set(1)
            log.info(
                "scoring endpoint %s serves model %s version %s (%s)",
                self.url,
                identity.model_name or "?",
                identity.model_version,
                identity.family,
            )
        return identity


class EndpointSlot:
    """The model slot of an API whose model is a scoring endpoint's: always the one
    ``RemotePredictor``. Nothing is loaded here; which model serves is the endpoint's
    deployments' choice (``prodclass deploy azureml``), so loads are refused with the reason."""

    def __init__(self, predictor: RemotePredictor) -> None:
        self._current = predictor
        self.last_load: LoadStatus | None = None
        self._probe: threading.Thread | None = None
        self._stop = threading.Event()

    @classmethod
    def start(cls, settings: Settings) -> EndpointSlot:
        """The slot, asking the endpoint in the background which model it serves (/models/current
        shows the outcome; /ready asks again)."""
        slot = cls(RemotePredictor.from_settings(settings))
        status = LoadStatus(
            uri=slot._current.url, version=None, state="loading", started=time.time()
        )
        status.source = "endpoint"
        slot.last_load = status
        slot._probe = threading.Thread(
            target=slot._first_answer, args=(status,), name="endpoint-probe", daemon=True
        )
        slot._probe.start()
        return slot

    @property
    def current(self) -> RemotePredictor:
        return self._current

    @property
    def loading(self) -> bool:
        return False  # never a local load

    def request_load(
        self, uri: str, version: str | None = None, fallback: bool = False
    ) -> LoadStatus:
        raise self.no_loads(uri)

    def no_loads(self, what: str) -> RemoteModelError:
        """Why ``what`` (a model URI, a version) cannot be served by this API."""
        return RemoteModelError(
            f"cannot serve {what} here: this API forwards predictions to the scoring endpoint "
            f"{self._current.url} (PRODCLASS_SCORING_URL); deploy the version to the endpoint "
            "(prodclass deploy azureml)"
        )

    def wait(self, timeout: float | None = None) -> LoadStatus | None:
        if self._probe is not None:
            self._probe.join(timeout)
        return self.last_load

    def registry_problem(self) -> str | None:
        return None  # the registry is not where this API's model comes from

    def close(self) -> None:
        self._stop.set()
        identity = self._current.identity
        if identity.family != "unknown":
            metrics.MODEL_INFO.remove(*info_labels(identity))
        self._current.close()

    def _first_answer(self, status: LoadStatus) -> None:
        """Ask until the endpoint answers (or the API stops): /models/current says where."""
        while (problem := self._current.readiness_problem()) is not None:
            status.state, status.error, status.finished = "failed", problem, time.time()
            log.warning("scoring endpoint %s does not answer yet: %s", self._current.url, problem)
            if self._stop.wait(PROBE_SECONDS):
                return
        status.state, status.error, status.finished = "serving", None, time.time()
        status.uri, status.version = self._current.model_uri, self._current.model_version
        log.info("predictions go to the scoring endpoint %s", self._current.url)


def _product_json(product: ProductInput) -> dict[str, Any]:
    """One product as score.py reads it (the API's batch JSON)."""
    out: dict[str, Any] = {
        "designation": product.designation,
        "description": product.description,
    }
    if product.product_id is not None:
        out["product_id"] = product.product_id
    if product.image:
        out["image_base64"] = base64.b64encode(product.image).decode("ascii")
    return out


def _excerpt(response: httpx.Response, limit: int = 300) -> str:
    text = " ".join(response.text.split())
    return (text[:limit] + " ...") if len(text) > limit else (text or "(empty body)")
