"""``/docs`` (Swagger UI) and ``/redoc`` with their scripts, styles and icon served by the API.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so they stay blank on a network that
cannot reach it (an air-gapped deployment, a locked-down cluster). The same pages are built
here with FastAPI's page functions, pointing at the files the ``fastapi-offline`` package
ships (Swagger UI's bundle and CSS, ReDoc's standalone bundle), which the API serves under
``/docs/assets``. Like FastAPI's pages they are open to anyone, as the OpenAPI document is.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import HTMLResponse

ASSETS = "/docs/assets"
SWAGGER_JS = "swagger-ui-bundle.js"
SWAGGER_CSS = "swagger-ui.css"
REDOC_JS = "redoc.standalone.js"
FAVICON = "favicon.png"


def assets_folder() -> str:
    """The folder of the files ``fastapi-offline`` ships (Swagger UI, ReDoc, the icon)."""
    return str(files("fastapi_offline") / "static")


def add_docs_pages(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Add the two pages, Swagger UI's OAuth2 redirect page and the assets they load to
    ``app``, which must be built with ``docs_url=None, redoc_url=None``. Every URL of the pages
    is a path of this API (under the proxy's ``root_path`` when there is one)."""
    openapi_url = app.openapi_url or "/openapi.json"
    redirect_url = app.swagger_ui_oauth2_redirect_url or f"{docs_url}/oauth2-redirect"
    app.mount(ASSETS, StaticFiles(directory=assets_folder()), name="docs-assets")

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{redirect_url}",
            swagger_js_url=f"{root}{ASSETS}/{SWAGGER_JS}",
            swagger_css_url=f"{root}{ASSETS}/{SWAGGER_CSS}",
            swagger_favicon_url=f"{root}{ASSETS}/{FAVICON}",
            # no badge from the public validator service: nothing leaves the network
            swagger_ui_parameters={"validatorUrl": None, **(app.swagger_ui_parameters or {})},
        )

    async def oauth2_redirect(_: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS}/{REDOC_JS}",
            redoc_favicon_url=f"{root}{ASSETS}/{FAVICON}",
            with_google_fonts=False,
        )

    # plain routes, as FastAPI adds its own pages: outside the OpenAPI document and the app's
    # dependencies, so they answer whoever asks, as before
    app.add_route(docs_url, swagger_ui, include_in_schema=False)
    app.add_route(redirect_url, oauth2_redirect, include_in_schema=False)
    app.add_route(redoc_url, redoc, include_in_schema=False)
