"""Routing refreshed at invocation: `InvocationSync`, for AWS Lambda and other frozen runtimes.

A Lambda execution environment is frozen between invocations, so a
background thread (`RoutingSync`) cannot be relied on: it runs only while an
invocation does. `InvocationSync` has no thread. Reading an app's snapshot
(`snapshot`, which `Client.decide` does once per invocation) refreshes it
first when it is older than ``max_age`` seconds: one conditional GET of
``/v1/apps/{app}/routing`` with ``If-None-Match``, answered 304 when nothing
changed. So at most one request per ``max_age`` per environment, on the
invocation that finds the snapshot stale; every other invocation reads memory.

Fail static (DESIGN rule 5): an error (the control plane down, a bad answer,
a timeout after ``timeout`` seconds) keeps the snapshot in hand, is logged
and kept in `status`, and is retried ``max_age`` seconds later; nothing here
raises into the handler. At cold start the snapshot comes from the control
plane; ``snapshot_file`` (a JSON snapshot shipped in the deployment package:
``GET /v1/apps/{app}/routing`` saved to a file at build time) and
``cache_dir`` (written after every change, e.g. under ``/tmp``) are read first,
the newer revision winning, so an outage at cold start still routes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx

from coalmine.core.model import validate_name
from coalmine.core.snapshot import RoutingSnapshot
from coalmine.sdk.sync import (
    ChangeCallback,
    Source,
    SyncStatus,
    describe_response,
    read_snapshot,
    write_snapshot,
)

__all__ = [
    "DEFAULT_MAX_AGE",
    "InvocationSync",
]

log = logging.getLogger("coalmine.sdk")

DEFAULT_MAX_AGE = 5.0
"""seconds a snapshot is used without asking the control plane again: a
release step or a rollback reaches a warm environment on its first
invocation after at most this long, and an environment invoked 100 times a
second asks once per 500 invocations (a 304 costs about a millisecond)"""
DEFAULT_TIMEOUT = 1.0
"""seconds one refresh may take before the last snapshot is kept: the most a
control-plane outage adds to an invocation, once per ``max_age``"""


class _App:
    """One app's snapshot and the bookkeeping of its refreshes."""

    def __init__(self, app: str) -> None:
        self.app = app
        self.snapshot: RoutingSnapshot | None = None
        self.source: Source | None = None
        self.checked = float("-inf")
        """monotonic time of the last refresh attempt (success or not)"""
        self.last_contact: float | None = None
        """wall time the snapshot was last known current"""
        self.connected = False
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.failing = False
        self.polls = 0
        self.not_modified = 0
        self.busy = threading.Lock()


class InvocationSync:
    """The latest `RoutingSnapshot` of each app, refreshed when read and older than ``max_age``.

    Offers what `coalmine.sdk.Client` uses of `RoutingSync` (``snapshot``,
    ``add``, ``wait_for``, ``wait_ready``, ``status``, ``on_change``,
    ``close``), so ``Client(..., max_age=5.0)`` runs on it.
    ``http`` is an ``httpx.Client`` to use (not closed here); ``clock`` is
    monotonic time for ages, ``wall`` the time reported in `status`.
    """

    def __init__(
        self,
        base_url: str,
        sdk_key: str,
        apps: Iterable[str] = (),
        *,
        max_age: float = DEFAULT_MAX_AGE,
        snapshot_file: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        http: httpx.Client | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if max_age < 0 or timeout <= 0:
            raise ValueError("max_age must be >= 0 and timeout > 0")
        self.base_url = base_url.rstrip("/")
        self.max_age = max_age
        self.timeout = timeout
        self.snapshot_file = Path(snapshot_file) if snapshot_file is not None else None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._headers = {
            "Authorization": f"Bearer {sdk_key}",
            "User-Agent": "coalmine-sdk-python",
        }
        self._clock = clock
        self._wall = wall
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client(timeout=timeout)
        self._lock = threading.Lock()
        self._apps: dict[str, _App] = {}
        self._subscribers: list[ChangeCallback] = []
        self._closed = False
        self._bundle = self._read_bundle()
        for app in apps:
            self.add(app)

    # what the client uses ----------------------------------------------------------

    @property
    def apps(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._apps)

    def add(self, app: str) -> bool:
        """Follow ``app`` (idempotent): load its bundled or cached snapshot, fetch nothing yet."""
        validate_name(app, "app")
        with self._lock:
            if self._closed:
                raise RuntimeError("this InvocationSync is closed")
            if app in self._apps:
                return False
            a = self._apps[app] = _App(app)
        self._cold_start(a)
        return True

    def snapshot(self, app: str) -> RoutingSnapshot | None:
        """The snapshot of ``app``, refreshed first if older than ``max_age``; never raises."""
        a = self._apps.get(app)
        if a is None:
            return None
        if self._clock() - a.checked >= self.max_age and not self._closed:
            self._refresh(a, wait=False)
        return a.snapshot

    def refresh(self, app: str) -> bool:
        """Ask the control plane now, whatever the age; True when it answered."""
        a = self._apps.get(app)
        return a is not None and self._refresh(a, wait=True)

    def wait_for(self, app: str, timeout: float | None = None) -> bool:
        """Refresh ``app`` now unless it has a snapshot; True when it has one.

        There is no background work to wait for: ``timeout`` is bounded by the
        sync's own ``timeout`` per request.
        """
        a = self._apps.get(app)
        if a is None:
            return False
        if a.snapshot is None or a.source in ("bundle", "cache"):
            self._refresh(a, wait=True)
        return a.snapshot is not None

    def wait_ready(self, timeout: float | None = None) -> bool:
        ready = [self.wait_for(app, timeout) for app in self.apps]  # every app, no short cut
        return all(ready)

    def status(self, app: str) -> SyncStatus:
        """How ``app``'s snapshot is kept current (KeyError if it is not followed)."""
        with self._lock:
            a = self._apps[app]
            snap = a.snapshot
            return SyncStatus(
                app=app,
                mode="closed" if self._closed else "invocation",
                connected=a.connected,
                source=a.source,
                revision=snap.revision if snap is not None else None,
                last_error=a.last_error,
                last_error_at=a.last_error_at,
                age=max(0.0, self._wall() - a.last_contact)
                if a.last_contact is not None and snap is not None
                else None,
                connects=0,
                polls=a.polls,
                not_modified=a.not_modified,
            )

    def on_change(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call ``callback(app, snapshot)`` after every new snapshot (on the invoking thread)."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    def close(self, timeout: float = 5.0) -> None:
        """Stop refreshing (idempotent); the snapshots stay readable."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> InvocationSync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # refreshing ----------------------------------------------------------------------

    def _refresh(self, a: _App, *, wait: bool) -> bool:
        # concurrent invocations of one process (threads) share one refresh;
        # the others go on with the snapshot in hand instead of queueing
        if not a.busy.acquire(blocking=wait):
            return False
        try:
            a.checked = self._clock()
            a.polls += 1
            headers = dict(self._headers)
            if a.snapshot is not None:
                headers["If-None-Match"] = a.snapshot.etag
            response = self._http.get(
                f"{self.base_url}/v1/apps/{a.app}/routing", headers=headers, timeout=self.timeout
            )
            if response.status_code == 304 and a.snapshot is not None:
                a.not_modified += 1
                a.last_contact = self._wall()
                if a.source in ("bundle", "cache"):
                    a.source = "poll"
            elif response.status_code == 200:
                self._accept(a, read_snapshot(response.json()), "poll")
            else:
                raise _Refused(describe_response(response))
        except Exception as exc:
            self._failed(a, exc)
            return False
        finally:
            a.busy.release()
        if a.failing:
            log.info("coalmine: routing of %s: the control plane answers again", a.app)
        a.connected, a.failing = True, False
        return True

    def _failed(self, a: _App, exc: Exception) -> None:
        text = str(exc) if isinstance(exc, _Refused) else f"{type(exc).__name__}: {exc}"
        a.last_error, a.last_error_at, a.connected = text, self._wall(), False
        # the first failure of an outage is a warning, the retries after it are debug
        log.log(
            logging.DEBUG if a.failing else logging.WARNING,
            "coalmine: routing of %s: refresh failed: %s (keeping the last snapshot,"
            " retrying in %gs)",
            a.app,
            text,
            self.max_age,
        )
        a.failing = True

    def _accept(self, a: _App, snap: RoutingSnapshot, source: Source) -> None:
        if snap.app != a.app:
            raise ValueError(f"got the snapshot of app {snap.app!r} instead of {a.app!r}")
        if source == "poll":
            a.last_contact = self._wall()
        held = a.snapshot
        if held is not None and snap.revision <= held.revision:
            if snap.revision == held.revision and a.source in ("bundle", "cache"):
                a.source = source  # the control plane confirmed the file's snapshot
            return
        a.snapshot, a.source = snap, source
        if source == "poll" and self.cache_dir is not None:
            write_snapshot(self.cache_dir / f"{a.app}.json", snap)
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(a.app, snap)
            except Exception:
                log.exception("coalmine: an on_change callback failed for %s", a.app)

    # cold start ---------------------------------------------------------------------

    def _read_bundle(self) -> dict[str, RoutingSnapshot]:
        """The bundled snapshot file: one snapshot, or a JSON list of them (several apps)."""
        if self.snapshot_file is None:
            return {}
        try:
            data = json.loads(self.snapshot_file.read_bytes())
            snaps = [read_snapshot(d) for d in (data if isinstance(data, list) else [data])]
        except Exception as exc:
            log.warning("coalmine: ignored the snapshot file %s: %s", self.snapshot_file, exc)
            return {}
        return {s.app: s for s in snaps}

    def _cold_start(self, a: _App) -> None:
        bundled = self._bundle.get(a.app)
        if bundled is not None:
            self._accept(a, bundled, "bundle")
        if self.cache_dir is None:
            return
        path = self.cache_dir / f"{a.app}.json"
        try:
            cached = read_snapshot(json.loads(path.read_bytes()))
            written = path.stat().st_mtime
        except FileNotFoundError:
            return
        except Exception as exc:
            log.warning("coalmine: ignored the routing cache %s: %s", path, exc)
            return
        if cached.app == a.app:
            self._accept(a, cached, "cache")
            if a.source == "cache":
                a.last_contact = written


class _Refused(Exception):
    pass
