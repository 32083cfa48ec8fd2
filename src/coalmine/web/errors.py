"""One mapping of errors to HTTP: domain errors, validation errors, a missing extra, anything else.

A feature whose optional dependency is not installed on the server (the
``aws`` extra for versions read from AWS) is a 501 naming the extra. A store
that cannot be reached (PostgreSQL down or restarting, SQLite busy past its
timeout) is a 503 with ``Retry-After``: clients and load balancers retry, and
the SDKs keep their last snapshot meanwhile. Every
error body is ``{"detail": "<what went wrong and what to fix>"}``;
validation errors (422) add ``errors``, one entry per bad field.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from coalmine._extras import MissingExtraError
from coalmine.core.errors import CoalmineError, Conflict, InvalidInput, NotFound, UpstreamFailed
from coalmine.core.machine import InvalidTransition

__all__ = ["install_error_handlers", "status_of", "validation_detail"]

log = logging.getLogger(__name__)
_STATUS: tuple[tuple[type[CoalmineError], int], ...] = (
    (InvalidInput, 400),
    (NotFound, 404),
    (Conflict, 409),
    (InvalidTransition, 409),
    (UpstreamFailed, 502),
)


def status_of(exc: CoalmineError) -> int:
    """The HTTP status of a domain error (400 for a kind not listed)."""
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 400


def _field(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "body"


def validation_detail(errors: Iterable[Any]) -> tuple[str, list[dict[str, Any]]]:
    """A one-line summary (``field.path: message; ...``) and the per-field list."""
    items = [
        {
            "loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in errors
    ]
    detail = "; ".join(f"{_field(e['loc'])}: {e['msg']}" for e in items)
    return detail or "invalid request", items


async def _coalmine_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CoalmineError)
    return JSONResponse({"detail": str(exc)}, status_code=status_of(exc))


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail, items = validation_detail(exc.errors())
    return JSONResponse({"detail": detail, "errors": items}, status_code=422)


async def _missing_extra(_request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": f"not available on this server: {exc}"}, status_code=501)


async def _store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # one line, not a traceback per request: an outage makes many of these at once
    log.warning(
        "%s %s: the store is unavailable: %s", request.method, request.url.path, _first_line(exc)
    )
    return JSONResponse(
        {"detail": "the store is unavailable (database down or busy); retry shortly"},
        status_code=503,
        headers={"Retry-After": "1"},
    )


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        {"detail": "internal error; the server log has the traceback"}, status_code=500
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(CoalmineError, _coalmine_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(MissingExtraError, _missing_extra)
    app.add_exception_handler(OperationalError, _store_unavailable)
    app.add_exception_handler(Exception, _unexpected)
