"""Follow the control plane: the latest routing snapshot of each app, in memory.

One daemon thread per app follows the app's Server-Sent Events stream
(``GET /v1/apps/{app}/routing/stream``): the current snapshot arrives at once,
then one per change. The stream has no read timeout as such, but a stream
that stays silent for ``dead_after`` seconds (three keepalive periods by
default) is taken for dead and reconnected. While the stream is down the
thread reconnects with exponential backoff and jitter (0.2 s doubling to a
1 s cap, ``backoff_max``) and polls ``GET /v1/apps/{app}/routing`` with ``If-None-Match`` at
each attempt and every ``poll_interval`` in between, so a proxy that refuses
streams only costs freshness. With ``stream=False`` it only polls.

Fail static (DESIGN rule 5): an error never drops the snapshot in hand, and
a snapshot older than the one held (a lower revision) is never applied. With
``cache_dir`` each new snapshot is also written atomically to
``<cache_dir>/<app>.json``; a process that starts while the control plane is
unreachable loads it (`SyncStatus.source` then says ``"cache"``).

Nothing here raises from a background thread: errors are logged on the
``coalmine.sdk`` logger and kept in `status`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from coalmine.core.model import validate_name
from coalmine.core.snapshot import RoutingSnapshot

__all__ = [
    "DEFAULT_BACKOFF_INITIAL",
    "DEFAULT_BACKOFF_MAX",
    "DEFAULT_KEEPALIVE",
    "ChangeCallback",
    "RoutingSync",
    "SyncStatus",
    "describe_response",
    "read_snapshot",
    "write_snapshot",
]

log = logging.getLogger("coalmine.sdk")

DEFAULT_KEEPALIVE = 15.0
"""seconds between the control plane's ``: keepalive`` comments (its ``heartbeat``)"""
DEFAULT_BACKOFF_INITIAL = 0.2
DEFAULT_BACKOFF_MAX = 1.0
"""so a client catches up within a second of the control plane's return; raise it
for very large fleets, whose reconnects then spread over a longer window"""

_HEALTHY_STREAM_SECONDS = 1.0
"""a stream that delivered a snapshot and lasted this long resets the backoff"""

ChangeCallback = Callable[[str, RoutingSnapshot], None]
"""``callback(app, snapshot)``, called on a sync thread after each new snapshot."""
Mode = Literal["starting", "stream", "polling", "invocation", "closed"]
Source = Literal["stream", "poll", "cache", "bundle"]


@dataclass(frozen=True, slots=True)
class SyncStatus:
    """How one app's routing is being kept up to date, for health checks and logs."""

    app: str
    mode: Mode
    """``starting`` (nothing tried yet), ``stream`` (following the SSE stream),
    ``polling`` (the stream is down or disabled), ``invocation`` (refreshed at
    invocation: `coalmine.sdk.InvocationSync`), ``closed``"""
    connected: bool
    """the control plane answered the last attempt (stream open or poll succeeded)"""
    source: Source | None
    """where the snapshot in hand came from; ``cache`` (or ``bundle``, a snapshot file
    shipped with the code) until the control plane answers"""
    revision: int | None
    last_error: str | None
    """the most recent error (kept after recovery; see ``connected``)"""
    last_error_at: float | None
    age: float | None
    """seconds since the snapshot in hand was last known current (an event, a
    keepalive, a 304, or the cache file's time)"""
    connects: int
    """times the stream was opened"""
    polls: int
    not_modified: int
    """polls answered 304 Not Modified"""


class _HTTPStatusError(Exception):
    pass


class _DeadStream(Exception):
    pass


@dataclass
class _SSE:
    event: str
    data: str
    id: str | None


def parse_sse(lines: Iterable[str], on_line: Callable[[], None] | None = None) -> Iterator[_SSE]:
    """Server-Sent Events from decoded lines (comments are skipped; ``on_line`` sees each line)."""
    event, last_id = "", None
    data: list[str] = []
    for line in lines:
        if on_line is not None:
            on_line()
        if not line:
            if data:
                yield _SSE(event or "message", "\n".join(data), last_id)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id":
            last_id = value


class _Follower:
    """The state of one followed app; guarded by the sync's lock."""

    def __init__(self, app: str) -> None:
        self.app = app
        self.snapshot: RoutingSnapshot | None = None
        self.source: Source | None = None
        self.mode: Mode = "starting"
        self.connected = False
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_contact: float | None = None
        self.last_poll = float("-inf")
        self.connects = 0
        self.polls = 0
        self.not_modified = 0
        self.cache_tried = False
        self.failing = False
        self.response: httpx.Response | None = None
        self.thread: threading.Thread | None = None


class RoutingSync:
    """The latest `RoutingSnapshot` of each followed app, kept current in the background.

    ``http`` is an ``httpx.Client`` to use (it is not closed here); by default
    one is made. ``keepalive`` is the control plane's heartbeat; a stream
    silent for ``dead_after`` seconds (default ``3 * keepalive``) is
    reconnected. ``timeout`` bounds connecting and each poll. ``clock`` gives
    the wall time used in `status`.
    """

    def __init__(
        self,
        base_url: str,
        sdk_key: str,
        apps: Iterable[str] = (),
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        stream: bool = True,
        poll_interval: float = 30.0,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
        keepalive: float = DEFAULT_KEEPALIVE,
        dead_after: float | None = None,
        backoff_initial: float = DEFAULT_BACKOFF_INITIAL,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
        timeout: float = 5.0,
    ) -> None:
        if poll_interval <= 0 or keepalive <= 0 or backoff_initial <= 0 or timeout <= 0:
            raise ValueError("poll_interval, keepalive, backoff_initial and timeout must be > 0")
        if backoff_max < backoff_initial:
            raise ValueError("backoff_max must be at least backoff_initial")
        self.base_url = base_url.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {sdk_key}",
            "User-Agent": "coalmine-sdk-python",
        }
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.stream = stream
        self.poll_interval = poll_interval
        self.keepalive = keepalive
        self.dead_after = dead_after if dead_after is not None else 3 * keepalive
        if self.dead_after <= 0:
            raise ValueError("dead_after must be > 0")
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.timeout = timeout
        self._clock = clock
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client(timeout=timeout)
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._followers: dict[str, _Follower] = {}
        self._subscribers: list[ChangeCallback] = []
        for app in apps:
            self.add(app)

    # public ---------------------------------------------------------------

    @property
    def apps(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._followers)

    def add(self, app: str) -> bool:
        """Start following ``app`` (idempotent); True when it was not followed yet."""
        validate_name(app, "app")
        with self._lock:
            if self._stop.is_set():
                raise RuntimeError("this RoutingSync is closed")
            if app in self._followers:
                return False
            follower = _Follower(app)
            self._followers[app] = follower
            follower.thread = threading.Thread(
                target=self._run, args=(follower,), name=f"coalmine-sync-{app}", daemon=True
            )
        follower.thread.start()
        return True

    def on_change(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call ``callback(app, snapshot)`` after every new snapshot; returns an unsubscribe.

        Callbacks run on the sync threads (one per app, so possibly
        concurrently); an exception in one is logged and ignored.
        """
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    def snapshot(self, app: str) -> RoutingSnapshot | None:
        """The latest snapshot of ``app``, or None if none arrived (or it is not followed)."""
        follower = self._followers.get(app)
        return follower.snapshot if follower is not None else None

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until every followed app has a snapshot; False on timeout."""
        return self._wait(
            lambda: all(f.snapshot is not None for f in self._followers.values()), timeout
        )

    def wait_for(self, app: str, timeout: float | None = None) -> bool:
        """Wait until ``app`` (followed) has a snapshot; False on timeout."""
        return self._wait(
            lambda: (f := self._followers.get(app)) is not None and f.snapshot is not None, timeout
        )

    def status(self, app: str) -> SyncStatus:
        """How ``app``'s snapshot is kept current (KeyError if it is not followed)."""
        with self._lock:
            f = self._followers[app]
            now = self._clock()
            snap = f.snapshot
            return SyncStatus(
                app=app,
                mode="closed" if self._stop.is_set() else f.mode,
                connected=f.connected,
                source=f.source,
                revision=snap.revision if snap is not None else None,
                last_error=f.last_error,
                last_error_at=f.last_error_at,
                age=max(0.0, now - f.last_contact)
                if f.last_contact is not None and snap is not None
                else None,
                connects=f.connects,
                polls=f.polls,
                not_modified=f.not_modified,
            )

    def close(self, timeout: float = 5.0) -> None:
        """Stop every thread (idempotent); the snapshots stay readable."""
        with self._lock:
            self._stop.set()
            self._ready.notify_all()
            followers = list(self._followers.values())
            responses = [f.response for f in followers if f.response is not None]
        for response in responses:
            _interrupt(response)
        deadline = time.monotonic() + timeout
        for f in followers:
            if f.thread is not None and f.thread is not threading.current_thread():
                f.thread.join(max(0.0, deadline - time.monotonic()))
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> RoutingSync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # the background thread --------------------------------------------------

    def _wait(self, ready: Callable[[], bool], timeout: float | None) -> bool:
        with self._ready:
            return self._ready.wait_for(lambda: ready() or self._stop.is_set(), timeout) and ready()

    def _url(self, app: str) -> str:
        return f"{self.base_url}/v1/apps/{app}/routing"

    def _backoff(self, attempt: int) -> float:
        base = min(self.backoff_max, self.backoff_initial * 2 ** min(attempt, 32))
        return random.uniform(base / 2, base)

    def _run(self, f: _Follower) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                if self.stream:
                    if self._follow(f):
                        attempt = 0
                    if self._stop.is_set():
                        break
                    self._poll(f)
                    self._load_cache_once(f)
                    self._sleep_polling(f, self._backoff(attempt))
                else:
                    ok = self._poll(f)
                    self._load_cache_once(f)
                    delay = self.poll_interval
                    if not ok:
                        delay = min(delay, self._backoff(attempt))
                    attempt = 0 if ok else attempt + 1
                    self._stop.wait(delay)
                    continue
            except Exception:  # never let the thread die
                log.exception("coalmine: routing sync of app %s failed unexpectedly", f.app)
                self._stop.wait(self._backoff(attempt))
            attempt += 1
        with self._lock:
            f.mode, f.connected = "closed", False

    def _sleep_polling(self, f: _Follower, delay: float) -> None:
        """Wait ``delay`` seconds before reconnecting, polling every ``poll_interval``."""
        end = time.monotonic() + delay
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= end:
                return
            due = f.last_poll + self.poll_interval
            if due <= now:
                self._poll(f)
                continue
            self._stop.wait(min(end, due) - now)

    def _follow(self, f: _Follower) -> bool:
        """Follow the stream until it ends; True when it was healthy.

        Healthy means it delivered a snapshot and stayed up a while: a proxy
        that cuts every stream at once must not make the thread reconnect
        without backing off.
        """
        opened, events = float("inf"), 0
        timeout = httpx.Timeout(self.timeout, read=self.dead_after)
        headers = {**self._headers, "Accept": "text/event-stream"}
        try:
            with self._http.stream(
                "GET", self._url(f.app) + "/stream", headers=headers, timeout=timeout
            ) as response:
                if response.status_code != 200:
                    response.read()
                    raise _HTTPStatusError(describe_response(response))
                opened = time.monotonic()
                with self._lock:
                    if self._stop.is_set():
                        return True
                    f.response = response
                    f.mode = "stream"
                    f.connects += 1
                self._recovered(f, "following the stream")
                try:
                    for event in parse_sse(response.iter_lines(), lambda: self._touch(f)):
                        if event.event == "snapshot":
                            self._on_event(f, event)
                            events += 1
                except httpx.ReadTimeout:
                    raise _DeadStream(
                        f"the stream was silent for {self.dead_after:g}s: presumed dead"
                    ) from None
                finally:
                    with self._lock:
                        f.response = None
            if not self._stop.is_set():
                self._failed(f, "the control plane ended the stream", log_level=logging.INFO)
        except Exception as exc:
            if not self._stop.is_set():
                self._failed(f, _explain(exc))
        return events > 0 and time.monotonic() - opened >= _HEALTHY_STREAM_SECONDS

    def _on_event(self, f: _Follower, event: _SSE) -> None:
        """Apply one snapshot event; a bad one is reported and skipped (the next is whole)."""
        try:
            snap = read_snapshot(json.loads(event.data))
            if snap.app != f.app:
                raise ValueError(f"it is the snapshot of app {snap.app!r}")
        except Exception as exc:
            message = f"skipped a bad snapshot event (id {event.id}): {_explain(exc)}"
            with self._lock:
                f.last_error, f.last_error_at = message, self._clock()
            log.warning("coalmine: routing of %s: %s", f.app, message)
            return
        self._accept(f, snap, "stream")

    def _poll(self, f: _Follower) -> bool:
        f.last_poll = time.monotonic()
        with self._lock:
            f.polls += 1
            held = f.snapshot
        headers = dict(self._headers)
        if held is not None:
            headers["If-None-Match"] = held.etag
        try:
            response = self._http.get(self._url(f.app), headers=headers, timeout=self.timeout)
            if response.status_code == 304:
                with self._lock:
                    f.not_modified += 1
                    f.last_contact = self._clock()
                    if f.source == "cache":
                        f.source = "poll"
            elif response.status_code == 200:
                self._accept(f, read_snapshot(response.json()), "poll")
            else:
                raise _HTTPStatusError(describe_response(response))
        except Exception as exc:
            if not self._stop.is_set():
                self._failed(f, f"poll: {_explain(exc)}")
            return False
        with self._lock:
            if f.mode == "starting":
                f.mode = "polling"
        self._recovered(f, "polling")
        return True

    def _touch(self, f: _Follower) -> None:
        f.last_contact = self._clock()

    def _failed(self, f: _Follower, message: str, *, log_level: int = logging.WARNING) -> None:
        with self._lock:
            f.last_error, f.last_error_at = message, self._clock()
            f.connected = False
            f.mode = "polling"
            repeated, f.failing = f.failing, True
        # the first failure of an outage is a warning, the retries after it are debug
        log.log(
            logging.DEBUG if repeated else log_level,
            "coalmine: routing of %s: %s (keeping the last snapshot)",
            f.app,
            message,
        )

    def _recovered(self, f: _Follower, how: str) -> None:
        with self._lock:
            f.connected = True
            was_failing, f.failing = f.failing, False
        if was_failing:
            log.info("coalmine: routing of %s: %s again", f.app, how)

    def _accept(self, f: _Follower, snap: RoutingSnapshot, source: Source) -> None:
        if snap.app != f.app:
            raise ValueError(f"got the snapshot of app {snap.app!r} instead of {f.app!r}")
        with self._lock:
            held = f.snapshot
            if source != "cache":
                f.last_contact = self._clock()
            if held is not None and snap.revision <= held.revision:
                if snap.revision < held.revision:
                    log.warning(
                        "coalmine: ignored revision %d of %s: revision %d is newer",
                        snap.revision,
                        f.app,
                        held.revision,
                    )
                elif f.source == "cache":
                    f.source = source  # the control plane confirmed the cached snapshot
                return
            f.snapshot, f.source = snap, source
            self._ready.notify_all()
            subscribers = list(self._subscribers)
        if source != "cache":
            self._write_cache(snap)
        for callback in subscribers:
            try:
                callback(f.app, snap)
            except Exception:
                log.exception("coalmine: an on_change callback failed for %s", f.app)

    # the disk cache -------------------------------------------------------------

    def _cache_path(self, app: str) -> Path | None:
        return self.cache_dir / f"{app}.json" if self.cache_dir is not None else None

    def _write_cache(self, snap: RoutingSnapshot) -> None:
        path = self._cache_path(snap.app)
        if path is not None:
            write_snapshot(path, snap)

    def _load_cache_once(self, f: _Follower) -> None:
        """At cold start, when the control plane did not answer, load the cached snapshot."""
        path = self._cache_path(f.app)
        if path is None or f.cache_tried or f.snapshot is not None:
            return
        f.cache_tried = True
        try:
            snap = read_snapshot(json.loads(path.read_bytes()))
            written = path.stat().st_mtime
        except FileNotFoundError:
            log.warning("coalmine: no routing for %s yet and no cache at %s", f.app, path)
            return
        except Exception as exc:
            log.warning("coalmine: ignored the routing cache %s: %s", path, _explain(exc))
            return
        if snap.app != f.app:
            log.warning("coalmine: ignored the routing cache %s: it is app %s", path, snap.app)
            return
        with self._lock:
            f.last_contact = written
        self._accept(f, snap, "cache")
        log.warning(
            "coalmine: control plane unreachable; routing %s with the cached revision %d of %s",
            f.app,
            snap.revision,
            path,
        )


def write_snapshot(path: Path, snap: RoutingSnapshot) -> None:
    """Write ``snap`` to ``path`` atomically (a crash leaves the old file); logs, never raises."""
    data = json.dumps(snap.to_dict(), separators=(",", ":"), sort_keys=True).encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{snap.app}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        log.warning("coalmine: cannot write the routing cache %s: %s", path, exc)


def read_snapshot(data: Any) -> RoutingSnapshot:
    """A snapshot from its decoded JSON; raises on anything else."""
    if not isinstance(data, dict):
        raise ValueError("the routing snapshot is not a JSON object")
    return RoutingSnapshot.from_dict(data)


def describe_response(response: httpx.Response) -> str:
    """An error answer of the control plane in one line: its status and detail (or text)."""
    detail = ""
    try:
        body = response.json()
        if isinstance(body, dict) and "detail" in body:
            detail = f": {body['detail']}"
    except Exception:
        detail = f": {response.text[:200]}" if response.text else ""
    return f"HTTP {response.status_code}{detail}"


def _explain(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, _HTTPStatusError | _DeadStream):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _interrupt(response: httpx.Response) -> None:
    """Wake a thread blocked reading ``response`` (best effort): shut its socket down."""
    stream = response.extensions.get("network_stream")
    sock = None
    if stream is not None:
        with contextlib.suppress(Exception):
            sock = stream.get_extra_info("socket")
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
