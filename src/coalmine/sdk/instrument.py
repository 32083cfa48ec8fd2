"""Outgoing HTTP carries the current routing context: httpx and requests, patched.

`instrument_httpx` wraps ``httpx.Client.send`` and ``httpx.AsyncClient.send``
(and ``requests.Session.send`` when requests is installed) so that, while a
scope is active (`coalmine.sdk.use`), every request gets the ``coalmine``
member in its ``baggage`` header. Other baggage members are kept, and a
coalmine member the caller set explicitly is not overridden. Outside a scope
requests are left untouched. Both functions are idempotent.
"""

from __future__ import annotations

import functools
import importlib
import threading
from collections.abc import Callable, MutableMapping
from typing import Any

import httpx

from coalmine.sdk.carriers import inject_http
from coalmine.sdk.scope import current_token

__all__ = ["instrument_httpx", "is_instrumented", "uninstrument_httpx"]

_MARK = "__coalmine_original__"
_lock = threading.Lock()


def _add_context(headers: MutableMapping[str, str]) -> None:
    token = current_token()
    if token is not None:
        inject_http(headers, token, replace=False)


def _wrap_sync(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        _add_context(request.headers)
        return original(self, request, *args, **kwargs)

    setattr(send, _MARK, original)
    return send


def _wrap_async(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        _add_context(request.headers)
        return await original(self, request, *args, **kwargs)

    setattr(send, _MARK, original)
    return send


def _targets() -> list[tuple[type, Callable[[Callable[..., Any]], Callable[..., Any]]]]:
    targets: list[tuple[type, Callable[[Callable[..., Any]], Callable[..., Any]]]] = [
        (httpx.Client, _wrap_sync),
        (httpx.AsyncClient, _wrap_async),
    ]
    try:
        requests = importlib.import_module("requests")
    except ImportError:
        pass
    else:
        targets.append((requests.Session, _wrap_sync))
    return targets


def instrument_httpx() -> None:
    """Patch httpx (and requests, if installed) to propagate the current context."""
    with _lock:
        for cls, wrap in _targets():
            send = cls.__dict__["send"]
            if not hasattr(send, _MARK):
                setattr(cls, "send", wrap(send))  # noqa: B010


def uninstrument_httpx() -> None:
    """Undo `instrument_httpx` (a send patched again by someone else is left alone)."""
    with _lock:
        for cls, _ in _targets():
            send = cls.__dict__["send"]
            original = getattr(send, _MARK, None)
            if original is not None:
                setattr(cls, "send", original)  # noqa: B010


def is_instrumented() -> bool:
    return all(hasattr(cls.__dict__["send"], _MARK) for cls, _ in _targets())
