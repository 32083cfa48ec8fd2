"""Key verification held briefly in memory: a request with a known key reads no database.

`KeyCache.authenticate` answers from memory for a key the store confirmed
less than `MAX_AGE_SECONDS` ago, and asks the store otherwise. What bounds a
revoked or rotated key's life, everywhere:

- every `REVALIDATE_SECONDS`, one read confirms all the keys held (and those
  open streams watch) at once; a key found revoked, or gone, is dropped and
  its watchers (`KeyCache.watch`: the SSE streams it opened) are told, so
  they end;
- a key not confirmed for `MAX_AGE_SECONDS` (the revalidation is late: a slow
  store) is checked against the store again by the request itself, so a
  revocation takes effect within that bound whatever the revalidation does;
- a revocation through this process's `TokenService` (``DELETE
  /v1/tokens/{id}``) drops the key and tells its watchers at once.

So a revocation anywhere (another replica, ``coalmine token revoke`` on the
store) stops the key here within `MAX_AGE_SECONDS` (under a second), open
streams included. Unknown and revoked keys are never held: each such
request asks the store, as before. Memory is bounded: at most ``max_keys``
keys (the least recently used goes first, unless a stream watches it), and a
key unused for `IDLE_SECONDS` is dropped. Keys are held by their SHA-256,
never as secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool

from coalmine.controller.tokens import MAX_SECRET_CHARS, Principal, TokenService, hash_secret

__all__ = ["IDLE_SECONDS", "MAX_AGE_SECONDS", "MAX_KEYS", "REVALIDATE_SECONDS", "KeyCache"]

log = logging.getLogger(__name__)
REVALIDATE_SECONDS = 0.25
"""how often every key held is confirmed against the store (one read)"""
MAX_AGE_SECONDS = 0.75
"""a key confirmed longer ago than this is checked again by the request that uses it"""
MAX_KEYS = 10_000
IDLE_SECONDS = 300.0

Watcher = Callable[[], None]


@dataclass(eq=False)
class _Key:
    principal: Principal
    confirmed: float
    """when the read that last found it valid began (the clock of the cache)"""
    used: float
    watchers: list[Watcher] = field(default_factory=list)


class KeyCache:
    """Principals by key hash, confirmed against ``tokens`` at most `MAX_AGE_SECONDS` ago."""

    def __init__(
        self,
        tokens: TokenService,
        *,
        revalidate: float | None = None,
        max_age: float | None = None,
        max_keys: int | None = None,
        idle: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``None``: the module's `REVALIDATE_SECONDS`, `MAX_AGE_SECONDS`, ..."""
        self.tokens = tokens
        self.revalidate = REVALIDATE_SECONDS if revalidate is None else revalidate
        self.max_age = MAX_AGE_SECONDS if max_age is None else max_age
        self.max_keys = MAX_KEYS if max_keys is None else max_keys
        self.idle = IDLE_SECONDS if idle is None else idle
        if not 0 < self.revalidate < self.max_age:
            raise ValueError("revalidate must be positive and shorter than max_age")
        self.clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, _Key] = {}
        self._revocations = 0
        """counts revocations told by `revoked`: a read that began before one is not kept"""
        self._task: asyncio.Task[None] | None = None
        tokens.on_revoke.append(self.revoked)

    # requests ------------------------------------------------------------
    async def authenticate(self, secret: str) -> Principal | None:
        """The principal ``secret`` stands for, or None (unknown or revoked)."""
        if not secret or len(secret) > MAX_SECRET_CHARS:
            return None
        digest = hash_secret(secret)
        now = self.clock()
        with self._lock:
            key = self._keys.get(digest)
            if key is not None and now - key.confirmed < self.max_age:
                key.used = now
                return key.principal
            revocations = self._revocations
        principal = (await run_in_threadpool(self.tokens.principals, [digest])).get(digest)
        told: list[Watcher] = []
        with self._lock:
            if principal is None:
                told = self._drop(digest)
            elif self._task is not None and self._revocations == revocations:
                self._keep(digest, principal, confirmed=now)
        _tell(told)
        return principal

    def watch(self, secret: str, principal: Principal, callback: Watcher) -> Callable[[], None]:
        """Call ``callback()`` once the key is found revoked; returns an unwatch function.

        Call it with the principal `authenticate` gave for the key. The callback
        runs on whichever thread found out: keep it short and thread-safe.
        """
        digest = hash_secret(secret)
        with self._lock:
            # not held (no revalidation running, or evicted): held from now on, unconfirmed
            key = self._keep(digest, principal, confirmed=-math.inf)
            key.watchers.append(callback)

        def unwatch() -> None:
            with self._lock:
                held = self._keys.get(digest)
                if held is not None and callback in held.watchers:
                    held.watchers.remove(callback)

        return unwatch

    def revoked(self, digest: str) -> None:
        """A key was revoked here: forget it and tell its watchers (any thread)."""
        with self._lock:
            self._revocations += 1
            watchers = self._drop(digest)
        _tell(watchers)

    # holding -------------------------------------------------------------
    def _keep(self, digest: str, principal: Principal, *, confirmed: float) -> _Key:
        key = self._keys.get(digest)
        if key is not None:  # a token's name, role and app never change
            key.confirmed = max(key.confirmed, confirmed)
            return key
        if len(self._keys) >= self.max_keys:
            self._evict_one()
        key = self._keys[digest] = _Key(principal, confirmed, self.clock())
        return key

    def _evict_one(self) -> None:
        idle = [(k.used, d) for d, k in self._keys.items() if not k.watchers]
        if idle:
            del self._keys[min(idle)[1]]

    def _drop(self, digest: str) -> list[Watcher]:
        key = self._keys.pop(digest, None)
        return key.watchers if key is not None else []

    # revalidation ----------------------------------------------------------
    def start(self) -> None:
        """Start confirming the keys held (on the running event loop); until then nothing is held."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._revalidate_forever())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with self._lock:
            self._keys.clear()

    async def _revalidate_forever(self) -> None:
        while True:
            await asyncio.sleep(self.revalidate)
            try:
                await self.revalidate_now()
            except Exception:  # a store hiccup is not a revocation: requests check on their own
                log.warning(
                    "cannot confirm the keys held; requests will ask the store", exc_info=True
                )

    async def revalidate_now(self) -> None:
        """Confirm every key held in one read; drop (and tell the watchers of) those revoked."""
        now = self.clock()
        with self._lock:
            for digest in [
                d for d, k in self._keys.items() if not k.watchers and now - k.used > self.idle
            ]:
                del self._keys[digest]
            digests = list(self._keys)
            revocations = self._revocations
        if not digests:
            return
        found = await run_in_threadpool(self.tokens.principals, digests)
        told: list[Watcher] = []
        with self._lock:
            for digest in digests:
                principal = found.get(digest)
                if principal is None:
                    told += self._drop(digest)
                elif digest in self._keys and self._revocations == revocations:
                    self._keep(digest, principal, confirmed=now)
        _tell(told)

    def __len__(self) -> int:
        return len(self._keys)


def _tell(watchers: list[Watcher]) -> None:
    for callback in watchers:
        try:
            callback()
        except Exception:
            log.exception("a key watcher failed")
