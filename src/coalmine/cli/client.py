"""The HTTP client the CLI commands use to reach a control plane.

Errors become `CliError` with the exit code the CLI promises: 2 for bad
input (400, 404, 422), 1 for an operation that failed (409, auth, a server
error, or an unreachable control plane).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from typing import Any

import httpx

__all__ = ["DEFAULT_URL", "ApiClient", "CliError", "resolve_token", "resolve_url"]

DEFAULT_URL = "http://127.0.0.1:8700"


class CliError(Exception):
    """A failure to report as one line on stderr with an exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def resolve_url(url: str | None) -> str:
    return (url or os.environ.get("COALMINE_URL") or DEFAULT_URL).rstrip("/")


def resolve_token(token: str | None) -> str | None:
    return token or os.environ.get("COALMINE_TOKEN") or None


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        return detail if isinstance(detail, str) else json.dumps(detail)
    return json.dumps(body)[:500]


class ApiClient:
    def __init__(self, url: str | None, token: str | None, *, timeout: float = 30.0) -> None:
        self.url = resolve_url(url)
        self.token = resolve_token(token)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self._streams: set[httpx.Response] = set()

    def close(self) -> None:
        """Close the client; a stream another thread is reading ends at once."""
        for response in list(self._streams):
            _interrupt(response)
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise CliError(
                f"cannot reach the control plane at {self.url} ({exc.__class__.__name__}: {exc});"
                " start it with 'coalmine serve' or pass --url / set COALMINE_URL"
            ) from exc
        if response.status_code >= 400:
            raise _error(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", path, params=clean)

    def get_all(self, path: str, page: int = 1000) -> list[dict[str, Any]]:
        """Every item of a list paged by id (``?after=<last id>&limit=``), oldest first."""
        items: list[dict[str, Any]] = []
        while True:
            after = items[-1]["id"] if items else 0
            got = self.get(path, after=after, limit=page)
            items += got
            if len(got) < page:
                return items

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        if body is not None:
            kwargs["json"] = body
        return self.request("POST", path, **kwargs)

    def stream_events(self, path: str) -> Iterator[tuple[str, str]]:
        """Server-sent events from ``path`` as (event, data) pairs, until closed."""
        try:
            with self._http.stream("GET", path, timeout=httpx.Timeout(10.0, read=None)) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error(response)
                self._streams.add(response)
                try:
                    yield from _events(response)
                finally:
                    self._streams.discard(response)
        except httpx.TransportError as exc:
            raise CliError(f"lost the stream from {self.url}: {exc}") from exc


def _events(response: httpx.Response) -> Iterator[tuple[str, str]]:
    event, data = "message", list[str]()
    for line in response.iter_lines():
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


def _interrupt(response: httpx.Response) -> None:
    """Shut a streaming response's socket down: a read blocked on it in another thread returns
    (closing the client alone leaves it blocked until the server closes, an idle SSE stream
    only at its next heartbeat or the server's shutdown)."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _error(response: httpx.Response) -> CliError:
    status = response.status_code
    detail = _detail(response)
    if status == 401:
        return CliError(f"{detail} (HTTP 401)", 1)
    if status == 403:
        return CliError(f"{detail} (HTTP 403)", 1)
    if status in (400, 404, 422):
        return CliError(detail, 2)
    return CliError(f"{detail} (HTTP {status})", 1)
