"""The change feed: tells subscribers which app's routing changed, once committed.

Writers call `ChangeFeed.mark(session, app)` inside their transaction. On
PostgreSQL that is a ``pg_notify`` (delivered by the server on commit, to
every replica listening: no polling); on SQLite the feed delivers to this
process's subscribers after the commit. Subscribers get the app name and
re-read the snapshot, so a duplicate or coalesced notice is harmless.

A cache needs more than notices: to know when it cannot trust them.
`ChangeFeed.live` says whether every committed change will be told (on
PostgreSQL: while the LISTEN connection is up), and `ChangeFeed.generation`
moves whenever notices may have been lost (that connection dropped, or came
back); what was read under an older generation must be read again. An
``eager`` subscriber also hears this process's own commits at once, before
PostgreSQL echoes them (so a write is visible to the next read here).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable

from sqlalchemy import event, text
from sqlalchemy.orm import Session

from coalmine.store.db import Store
from coalmine.store.models import AppRow

__all__ = ["CHANNEL", "ChangeFeed"]

CHANNEL = "coalmine_changes"
_PENDING = "coalmine_changed_apps"
_BACKOFF_MAX = 1.0
"""the longest wait between LISTEN reconnection attempts: however long PostgreSQL was
down, a replica hears changes again within about a second of its return (rule 4); one
connection attempt a second per replica is cheap"""
log = logging.getLogger(__name__)

Subscriber = Callable[[str], None]


def _weakly(method: Callable[[Session], None]) -> Callable[[Session], None]:
    """``method``, held by a weak reference (a no-op once its feed is gone)."""
    ref = weakref.WeakMethod(method)

    def call(session: Session) -> None:
        bound = ref()
        if bound is not None:
            bound(session)

    return call


class ChangeFeed:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()
        self._listener: threading.Thread | None = None
        self._stop = threading.Event()
        # one key per feed: two feeds on one store each hear their own marks
        self._key = f"{_PENDING}:{id(self)}"
        self._listening = threading.Event()
        self._eager: list[Subscriber] = []
        self.generation = 0
        """moves whenever notices may have been lost (see the module docstring)"""
        # SQLAlchemy keeps session-class listeners in a process-wide registry: a
        # strong reference to this feed there would keep the feed, its store and
        # the session class alive for ever (every app built in a process leaked).
        event.listen(store.sessions, "after_commit", _weakly(self._after_commit))
        event.listen(store.sessions, "after_rollback", _weakly(self._after_rollback))

    # writers -------------------------------------------------------------
    def mark(self, session: Session, app: str) -> None:
        """Record that ``app`` changed in this transaction."""
        session.info.setdefault(self._key, set()).add(app)
        if self.store.is_postgres:
            session.execute(
                text("SELECT pg_notify(:channel, :app)"), {"channel": CHANNEL, "app": app}
            )

    def _after_commit(self, session: Session) -> None:
        apps: set[str] = session.info.pop(self._key, set())
        if not apps:
            return
        eager_only = self._listening.is_set()  # the others hear it when PostgreSQL echoes it
        for app in sorted(apps):
            self._deliver(app, eager_only=eager_only)

    def _after_rollback(self, session: Session) -> None:
        session.info.pop(self._key, None)

    # readers -------------------------------------------------------------
    def subscribe(self, callback: Subscriber, *, eager: bool = False) -> Callable[[], None]:
        """Call ``callback(app)`` after each change; returns an unsubscribe function.

        Callbacks run on the committing (or listening) thread: keep them short
        and thread-safe (e.g. ``loop.call_soon_threadsafe``). An ``eager``
        callback also hears this process's commits at once when PostgreSQL will
        echo them too: twice, which must be harmless to it.
        """
        with self._lock:
            self._subscribers.append(callback)
            if eager:
                self._eager.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)
                if callback in self._eager:
                    self._eager.remove(callback)

        return unsubscribe

    @property
    def live(self) -> bool:
        """Whether every committed change will be told: on PostgreSQL, while LISTEN is up."""
        return not self.store.is_postgres or self._listening.is_set()

    def _deliver(self, app: str, *, eager_only: bool = False) -> None:
        with self._lock:
            subscribers = list(self._eager if eager_only else self._subscribers)
        for callback in subscribers:
            try:
                callback(app)
            except Exception:  # one bad subscriber must not starve the others
                log.exception("change feed subscriber failed")

    # PostgreSQL LISTEN ----------------------------------------------------
    def start(self) -> None:
        """On PostgreSQL, listen for other replicas' changes in a background thread."""
        if not self.store.is_postgres or self._listener is not None:
            return
        self._stop.clear()
        self._listener = threading.Thread(target=self._listen, name="coalmine-listen", daemon=True)
        self._listener.start()
        self._listening.wait(timeout=10)

    def stop(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.join(timeout=5)
            self._listener = None
        if self._listening.is_set():
            self._listening.clear()
            self.generation += 1

    def _dsn(self) -> str:
        from psycopg.conninfo import make_conninfo

        url = self.store.engine.url.set(drivername="postgresql")
        # TCP keepalives: a LISTEN connection that silently died (no RST) is found out
        # in seconds, not hours (its notices would be lost meanwhile)
        return make_conninfo(
            url.render_as_string(hide_password=False),
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=1,
            keepalives_count=3,
        )

    def _listen(self) -> None:
        import psycopg

        backoff = 0.2
        reconnecting = False
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._dsn(), autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.generation += 1  # what was read before LISTEN may be stale
                    self._listening.set()
                    backoff = 0.2
                    if reconnecting:
                        # PostgreSQL drops the notices sent while we were not listening:
                        # tell subscribers about every app (a re-read is harmless).
                        query = f"SELECT name FROM {AppRow.__tablename__} ORDER BY name"
                        for (app,) in conn.execute(query).fetchall():
                            self._deliver(app)
                    reconnecting = True
                    while not self._stop.is_set():
                        for notice in conn.notifies(timeout=0.5):
                            self._deliver(notice.payload)
            except Exception as exc:  # reconnect: the data plane must catch up
                self._listening.clear()
                self.generation += 1
                log.warning("change feed: LISTEN connection lost (%s); reconnecting", exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)

    @property
    def listening(self) -> bool:
        return self._listening.is_set()
