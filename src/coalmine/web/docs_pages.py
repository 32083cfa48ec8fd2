"""The API's own pages: ``/openapi.json``, Swagger UI at ``/docs``, ReDoc at ``/redoc``.

Their scripts, styles and icon are served by the control plane from
``/docs/assets/`` (the files of the ``fastapi-offline`` package: Swagger UI
and ReDoc as their CDNs ship them), never from a CDN, so the pages work
offline and leak nothing to a third party (their Content-Security-Policy lets
the browser load nothing from another origin). The assets hold no data and are
public; the pages and the document need a viewer token unless ``public``
(docs/ui.md, docs/api.md).
"""

from __future__ import annotations

from importlib.resources import files
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response

from coalmine.controller.tokens import Principal
from coalmine.web.auth import Require

__all__ = ["ASSETS", "CSP", "OPENAPI", "add_docs"]

OPENAPI = "/openapi.json"
_PREFIX = "/docs/assets/"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
"""the files served under /docs/assets/ and their media types"""
Viewer = Annotated[Principal, Depends(Require("viewer", "read the API docs"))]
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline';"
    " img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:;"
    " base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
"""the pages' policy: FastAPI's pages start Swagger UI and ReDoc with an inline script, and
ReDoc always shows Redocly's logo from its CDN, which the browser then does not fetch"""


def _asset(name: str) -> Response:
    media = ASSETS.get(name)
    if media is None:
        raise HTTPException(404, f"no asset {name!r}; there are {', '.join(sorted(ASSETS))}")
    body = (files("fastapi_offline") / "static" / name).read_bytes()
    return Response(
        body,
        media_type=media,
        headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
    )


def _page(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CSP
    page.headers["X-Content-Type-Options"] = "nosniff"
    return page


def _swagger(title: str) -> HTMLResponse:
    return _page(
        get_swagger_ui_html(
            openapi_url=OPENAPI,
            title=f"{title} - Swagger UI",
            swagger_js_url=_PREFIX + "swagger-ui-bundle.js",
            swagger_css_url=_PREFIX + "swagger-ui.css",
            swagger_favicon_url=_PREFIX + "favicon.png",
            # no badge fetched from validator.swagger.io
            swagger_ui_parameters={"validatorUrl": None},
        )
    )


def _redoc(title: str) -> HTMLResponse:
    return _page(
        get_redoc_html(
            openapi_url=OPENAPI,
            title=f"{title} - ReDoc",
            redoc_js_url=_PREFIX + "redoc.standalone.js",
            redoc_favicon_url=_PREFIX + "favicon.png",
            with_google_fonts=False,
        )
    )


def add_docs(app: FastAPI, *, public: bool) -> None:
    """Add the pages and their assets; the pages (and, unless ``public``, the document) for a
    viewer token. FastAPI serves a public document itself (``openapi_url``)."""

    async def asset(name: str) -> Response:
        return _asset(name)

    app.add_api_route(_PREFIX + "{name}", asset, methods=["GET"], include_in_schema=False)
    if public:

        async def swagger_public() -> HTMLResponse:
            return _swagger(app.title)

        async def redoc_public() -> HTMLResponse:
            return _redoc(app.title)

        for path, page in (("/docs", swagger_public), ("/redoc", redoc_public)):
            app.add_api_route(path, page, methods=["GET"], include_in_schema=False)
        return

    async def openapi(_: Viewer) -> JSONResponse:
        return JSONResponse(app.openapi())

    async def swagger(_: Viewer) -> HTMLResponse:
        return _swagger(app.title)

    async def redoc(_: Viewer) -> HTMLResponse:
        return _redoc(app.title)

    for path, route in ((OPENAPI, openapi), ("/docs", swagger), ("/redoc", redoc)):
        app.add_api_route(path, route, methods=["GET"], include_in_schema=False)
