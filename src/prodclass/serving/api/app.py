"""The FastAPI application: routers, error answers, metrics and upload limits.

``create_app(settings)`` builds one; ``prodclass serve`` runs it with uvicorn. Every error a
client can cause is a 4xx JSON ``{"detail": reason}``; overload is a 503 with Retry-After.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prodclass import __version__
from prodclass.db.encryption import EncryptionError
from prodclass.db.users import UserError
from prodclass.models.base import NoEmbeddingError
from prodclass.photo_store import PhotoStoreError
from prodclass.registry.model_registry import RegistryError
from prodclass.serving import metrics
from prodclass.serving.api.deps import storable_url
from prodclass.serving.api.docs_pages import add_docs_pages
from prodclass.serving.api.routes import (
    ab_testing,
    alerts,
    auth,
    feedback,
    models,
    monitoring,
    predict,
    predictions,
    similarity,
    system,
    training,
    users,
)
from prodclass.serving.api.schemas import ErrorOut, validation_reason
from prodclass.serving.api.services import Services
from prodclass.serving.model_slot import LoadInProgressError
from prodclass.serving.prediction_queue import NoModelError, OverloadedError
from prodclass.serving.predictor import InvalidProductError
from prodclass.serving.remote_predictor import (
    RemoteModelError,
    ScoringEndpointError,
    ScoringTimeoutError,
)
from prodclass.serving.similarity import IndexMissingError
from prodclass.settings import Settings, get_settings

log = logging.getLogger(__name__)

BATCH_PREFIX = "/predict/batch"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.services = Services.start(settings)
        try:
            yield
        finally:
            app.state.services.stop()

    app = FastAPI(
        title="prodclass",
        version=__version__,
        description="Classify Rakuten catalogue products into their 27 product-type codes "
        "from a French title, description and photo.",
        lifespan=lifespan,
        # before every route's own dependencies: no text a URL carries that cannot be taken
        dependencies=[Depends(storable_url)],
        # /docs and /redoc are added below with their files served by the API: no CDN
        docs_url=None,
        redoc_url=None,
    )
    add_docs_pages(app)
    for module in (
        system,
        auth,
        users,
        predict,
        similarity,
        ab_testing,  # before models: /models/ab/... is no version
        models,
        training,
        predictions,
        feedback,
        monitoring,
        alerts,
    ):
        app.include_router(module.router)
    _add_error_answers(app)
    _document_error_answers(app)
    # outermost first: metrics see the 413s of the size limit too
    app.add_middleware(
        BodyLimit,
        default_limit=settings.api_max_upload_bytes + 1024 * 1024,  # the photo + form fields
        batch_limit=settings.api_max_batch_upload_bytes,
    )
    app.add_middleware(RequestMetrics)
    return app


def _json(status_code: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)


# Our exceptions -> the client's status codes (never a 500 for the client's input), and the
# Retry-After of those that pass.
CLIENT_ERRORS: dict[type[Exception], tuple[int, str | None]] = {
    InvalidProductError: (status.HTTP_422_UNPROCESSABLE_CONTENT, None),
    UserError: (status.HTTP_400_BAD_REQUEST, None),
    RegistryError: (status.HTTP_404_NOT_FOUND, None),
    LookupError: (status.HTTP_404_NOT_FOUND, None),
    LoadInProgressError: (status.HTTP_409_CONFLICT, None),
    IndexMissingError: (status.HTTP_409_CONFLICT, None),
    NoEmbeddingError: (status.HTTP_409_CONFLICT, None),
    NoModelError: (status.HTTP_503_SERVICE_UNAVAILABLE, "5"),
    RemoteModelError: (status.HTTP_409_CONFLICT, None),
    # the scoring endpoint (PRODCLASS_SCORING_URL) failed or timed out: the upstream's fault
    ScoringEndpointError: (status.HTTP_502_BAD_GATEWAY, None),
    ScoringTimeoutError: (status.HTTP_504_GATEWAY_TIMEOUT, None),
    EncryptionError: (status.HTTP_503_SERVICE_UNAVAILABLE, None),  # keys misconfigured
}


def _add_error_answers(app: FastAPI) -> None:
    async def client_error(_: Request, exc: Exception) -> JSONResponse:
        # the most specific registered class wins (IndexMissingError is also a LookupError)
        code, retry_after = next(CLIENT_ERRORS[t] for t in type(exc).__mro__ if t in CLIENT_ERRORS)
        detail = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        return _json(code, detail, {"Retry-After": retry_after} if retry_after else None)

    for exc_type in CLIENT_ERRORS:
        app.add_exception_handler(exc_type, client_error)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer echoes the input, which may not render (NaN: a 500)
        return _json(status.HTTP_422_UNPROCESSABLE_CONTENT, validation_reason(exc.errors()))

    @app.exception_handler(OverloadedError)
    async def overloaded(_: Request, exc: OverloadedError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)}
        return _json(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), headers)

    @app.exception_handler(OperationalError)
    async def database_down(_: Request, exc: OperationalError) -> JSONResponse:
        headers = {"Retry-After": "5"}
        return _json(status.HTTP_503_SERVICE_UNAVAILABLE, "database unavailable", headers)

    @app.exception_handler(PhotoStoreError)
    async def photo_store_down(_: Request, exc: PhotoStoreError) -> JSONResponse:
        log.warning("photo store: %s", exc)  # where and why for the operator, not the client
        headers = {"Retry-After": "5"}
        return _json(status.HTTP_503_SERVICE_UNAVAILABLE, "photo store unavailable", headers)


def _document_error_answers(app: FastAPI) -> None:
    """The OpenAPI document shows the 422 body this API sends (``ErrorOut``: a reason string),
    not FastAPI's default (a list of errors echoing the input)."""
    generate = app.openapi

    def document() -> dict:
        fresh = app.openapi_schema is None
        openapi = generate()  # cached by FastAPI after the first call
        if fresh:
            schemas = openapi["components"]["schemas"]
            schemas.pop("ValidationError", None)
            schemas["HTTPValidationError"] = ErrorOut.model_json_schema() | {
                "title": "HTTPValidationError"
            }
        return openapi

    app.openapi = document  # type: ignore[method-assign]


class BodyTooLargeError(Exception):
    pass


class BodyLimit:
    """Refuse request bodies over the limit with 413, before they are read into memory or disk
    (by Content-Length when given, else by counting the chunks as they arrive)."""

    def __init__(self, app: ASGIApp, default_limit: int, batch_limit: int) -> None:
        self.app, self.default_limit, self.batch_limit = app, default_limit, batch_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        limit = self.batch_limit if path.startswith(BATCH_PREFIX) else self.default_limit
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, receive, send, limit)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLargeError
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLargeError:
            if not started:
                await self._refuse(scope, receive, send, limit)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = _json(
            status.HTTP_413_CONTENT_TOO_LARGE, f"request body is over the {limit}-byte limit"
        )
        await response(scope, receive, send)


class RequestMetrics:
    """Count and time every request by method, route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        code = 500

        async def send_status(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            method = scope.get("method", "")
            metrics.REQUESTS.labels(method, template, str(code)).inc()
            metrics.REQUEST_LATENCY.labels(method, template).observe(time.perf_counter() - start)
