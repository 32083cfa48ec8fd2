"""`Client`: what function code uses to route users with coalmine.

A client follows the routing of its apps in the background (`RoutingSync`)
and decides locally, with the one pure routing function of the core
(`coalmine.core.evaluate`), so a decision costs no network round trip and
gives the same answer as the gateway and the discovery endpoint (DESIGN
rule 1). It never raises on the request path: without any routing
configuration the decision is the stable channel with reason ``error``.

It also counts calls per version (`record`, used by the handler decorator)
and flushes them to the control plane in the background (`coalmine.metrics`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, TypeVar

import httpx

from coalmine.core.context import (
    DEFAULT_TTL_SECONDS,
    RoutingContext,
    bound,
    check_user,
    encode_context,
    find_in_baggage,
)
from coalmine.core.errors import InvalidInput
from coalmine.core.model import Channel, Decision, Reason
from coalmine.core.routing import RoutingState, decide, evaluate
from coalmine.core.signing import Keyring
from coalmine.core.snapshot import RoutingSnapshot
from coalmine.metrics.emf import EmfWriter, emf_enabled, emf_namespace
from coalmine.metrics.flush import DEFAULT_INTERVAL, Flusher
from coalmine.metrics.lambda_flush import DEFAULT_LAMBDA_INTERVAL, LambdaFlusher
from coalmine.metrics.recorder import Recorder
from coalmine.sdk.handler import UserKey
from coalmine.sdk.handler import handler as handler_decorator
from coalmine.sdk.keys import keyring_from_env
from coalmine.sdk.lambda_env import LambdaEnvironment, running_version
from coalmine.sdk.refresh import InvocationSync
from coalmine.sdk.scope import use
from coalmine.sdk.sync import (
    DEFAULT_BACKOFF_MAX,
    DEFAULT_KEEPALIVE,
    ChangeCallback,
    RoutingSync,
    SyncStatus,
)

__all__ = ["Client", "Context"]

log = logging.getLogger("coalmine.sdk")

Context = str | RoutingContext | None
"""An incoming routing context: the coalmine baggage member's value, a whole
``baggage`` header value, or an already verified `RoutingContext`."""
F = TypeVar("F", bound=Callable[..., Any])
_EMPTY: dict[str, str] = {}


class Client:
    """Decide which versions a user runs, with routing kept in sync with the control plane.

    ``apps`` are followed from the start (and `wait_ready` waits up to
    ``wait`` seconds for them); any other app is followed from its first
    `decide`, which then waits up to ``wait`` seconds once for its routing.
    ``signing_keys`` (a `Keyring` or a ``"kid:secret,..."`` spec; by default
    ``$COALMINE_SIGNING_KEYS``) sign outgoing contexts and verify incoming ones.
    ``metrics`` (on by default, since there is an sdk key) counts calls per
    version with `record` and sends them to the control plane every
    ``flush_interval`` seconds from a background thread (`coalmine.metrics`).
    In a Lambda (``AWS_LAMBDA_FUNCTION_NAME`` is set) flushes follow
    invocations instead, at most one per ``lambda_flush_interval`` seconds,
    never blocking one (`LambdaFlusher`), and each invocation's calls are
    also written to stdout as CloudWatch EMF lines (``COALMINE_EMF``).
    The other options are those of `RoutingSync`.

    ``max_age`` (seconds) switches to refreshing at invocation, with no
    background thread (`InvocationSync`, for AWS Lambda): reading an app's
    routing asks the control plane first when the snapshot is older than
    that; ``snapshot_file`` is a snapshot shipped with the code for cold
    starts. ``stream``, ``poll_interval``, ``keepalive`` and ``backoff_max``
    are then unused.
    """

    def __init__(
        self,
        control_plane_url: str,
        sdk_key: str,
        *,
        apps: Iterable[str] | None = None,
        signing_keys: Keyring | str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        stream: bool = True,
        poll_interval: float = 30.0,
        wait: float = 5.0,
        keepalive: float = DEFAULT_KEEPALIVE,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
        http: httpx.Client | None = None,
        metrics: bool | None = None,
        flush_interval: float = DEFAULT_INTERVAL,
        lambda_flush_interval: float = DEFAULT_LAMBDA_INTERVAL,
        max_age: float | None = None,
        snapshot_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.recorder: Recorder | None = None
        self.flusher: Flusher | None = None
        self.lambda_env = LambdaEnvironment.detect()
        self.emf: EmfWriter | None = None
        self._running: dict[tuple[str, str, int], str | None] = {}
        if metrics if metrics is not None else bool(sdk_key):
            self.recorder = Recorder()
            # in a Lambda, flushes follow invocations: no timer thread in a frozen process
            flusher = LambdaFlusher if self.lambda_env is not None else Flusher
            self.flusher = flusher(
                self.recorder,
                control_plane_url,
                sdk_key,
                None,
                flush_interval if self.lambda_env is None else lambda_flush_interval,
                http=http,
                start=False,
            )
            if emf_enabled(os.environ, default=self.lambda_env is not None):
                self.emf = EmfWriter(emf_namespace(os.environ))
        if isinstance(signing_keys, str):
            signing_keys = Keyring.parse(signing_keys)
        self.keyring: Keyring | None = (
            signing_keys if signing_keys is not None else keyring_from_env()
        )
        self.wait = wait
        self._waited: set[str] = set()
        self._lock = threading.Lock()
        initial = list(apps or ())
        self.sync: RoutingSync | InvocationSync
        if max_age is not None:
            self.sync = InvocationSync(
                control_plane_url,
                sdk_key,
                initial,
                max_age=max_age,
                snapshot_file=snapshot_file,
                cache_dir=cache_dir,
                http=http,
            )
        else:
            self.sync = RoutingSync(
                control_plane_url,
                sdk_key,
                initial,
                cache_dir=cache_dir,
                stream=stream,
                poll_interval=poll_interval,
                http=http,
                keepalive=keepalive,
                backoff_max=backoff_max,
            )
        if self.flusher is not None:
            self.flusher.start()
        if initial and wait > 0:
            self.sync.wait_ready(wait)
        self._waited.update(initial)

    # deciding ------------------------------------------------------------------

    def decide(
        self,
        app: str,
        user_key: str | None,
        context: Context = None,
        *,
        override: str | None = None,
    ) -> Decision:
        """The decision for ``user_key`` in ``app``, honouring an upstream ``context``.

        Never raises. A context that fails verification is ignored (the
        decision's ``detail`` says why) and the user is decided afresh; so is
        the context of another user. The decision carries ``user_key``'s
        binding: the context `encode` signs from it is that user's.
        """
        return bound(self._decide(app, user_key, context, override), self.keyring, user_key)

    def _decide(
        self, app: str, user_key: str | None, context: Context, override: str | None
    ) -> Decision:
        try:
            snap = self.sync.snapshot(app) if context is None and override is None else None
            if snap is not None:
                # nothing to verify: exactly what evaluate() would do, minus its bookkeeping
                return decide(snap.state, user_key)
            snap = self._snapshot_for(app)
            now = time.time()
            if isinstance(context, RoutingContext):
                refused = check_user(context, self.keyring, user_key) if self.keyring else None
                if refused is not None:  # another user's context: decide this one afresh
                    fresh = self._decide(app, user_key, None, override)
                    note = f"routing context ignored ({refused.kind}): {refused.message}"
                    return replace(
                        fresh, detail=f"{fresh.detail}; {note}" if fresh.detail else note
                    )
                state = snap.state if snap is not None else RoutingState(app)
                if snap is None and context.app != app:
                    return _no_config(app)
                return decide(state, user_key, context)
            token = _token_of(context)
            if snap is None:
                return self._without_config(app, user_key, token, now)
            return evaluate(
                snap.state,
                user_key,
                keyring=self.keyring,
                now=now,
                context=token,
                override=override,
            )
        except InvalidInput as exc:  # a bad app name: the caller's mistake, said in the detail
            return Decision(app, None, Channel.STABLE, _EMPTY, Reason.ERROR, str(exc))
        except Exception as exc:
            log.exception("coalmine: decide(%r) failed", app)
            return Decision(
                app, None, Channel.STABLE, _EMPTY, Reason.ERROR, f"{type(exc).__name__}: {exc}"
            )

    def _without_config(
        self, app: str, user_key: str | None, token: str | None, now: float
    ) -> Decision:
        """No snapshot yet: a verified upstream context is still honoured (DESIGN rule 2)."""
        if token is not None and self.keyring is not None:
            pinned = evaluate(
                RoutingState(app), user_key, keyring=self.keyring, now=now, context=token
            )
            if pinned.reason is Reason.PINNED:
                return pinned
        return _no_config(app)

    def _snapshot_for(self, app: str) -> RoutingSnapshot | None:
        snap = self.sync.snapshot(app)
        if snap is not None:
            return snap
        with self._lock:
            first = app not in self._waited
            self._waited.add(app)
        if first:
            self.sync.add(app)
            if self.wait > 0:
                self.sync.wait_for(app, self.wait)
        return self.sync.snapshot(app)

    def encode(
        self, decision: Decision, *, ttl: float | None = None, user: str | None = None
    ) -> str | None:
        """The signed routing context of ``decision`` to propagate downstream.

        The context is bound to the user the decision was made for (`decide`
        binds it), so a hop serving another user does not honour it; ``user``
        binds it to that user key instead. A decision made for no user
        carries the binding of the context it was pinned by, or none (then a
        hop that knows its user decides afresh).

        None when no signing key is configured or there is nothing to pin: no
        release, or an error decision (say, no user key), after which each
        hop decides for itself. Never raises.
        """
        if self.keyring is None or decision.release_id is None or decision.reason is Reason.ERROR:
            return None
        try:
            life = DEFAULT_TTL_SECONDS if ttl is None else ttl
            return encode_context(decision, self.keyring, now=time.time(), ttl=life, user=user)
        except Exception as exc:
            log.warning("coalmine: cannot encode the routing context of %s: %s", decision.app, exc)
            return None

    @contextmanager
    def use(self, decision: Decision, *, user: str | None = None) -> Iterator[Decision]:
        """Make ``decision`` (and its signed context, bound to ``user``) current:
        `coalmine.sdk.use`."""
        with use(decision, self.encode(decision, user=user)) as d:
            yield d

    def handler(
        self,
        app: str,
        *,
        user: UserKey = None,
        function: str | None = None,
        version: str | None = None,
    ) -> Callable[[F], F]:
        """Decorate a Lambda-style ``handler(event, context)``: see `coalmine.sdk.handler`."""
        return handler_decorator(self, app, user=user, function=function, version=version)

    # metrics -----------------------------------------------------------------------

    def record(
        self,
        app: str,
        function: str,
        version: str,
        channel: Channel | str,
        duration_ms: float | None,
        *,
        error: bool = False,
    ) -> None:
        """Count one call of ``version`` of ``function`` in ``channel``: its duration in
        milliseconds (None if not measured) and whether it failed.

        Never raises (a bad name is logged); does nothing with metrics off.
        """
        recorder = self.recorder
        if recorder is None:
            return
        try:
            recorder.record(app, function, version, channel, duration_ms, error=error)
            if self.emf is not None:
                self.emf.add(app, function, version, channel, duration_ms, error=error)
        except Exception as exc:
            log.warning("coalmine: cannot record a call of %s %s: %s", function, version, exc)

    def after_invocation(self) -> None:
        """The end of one invocation (the handler decorator calls it): write its EMF lines and,
        in a Lambda, start a background flush if one is due. Never blocks on the network,
        never raises. Call it yourself if you `record` without the decorator."""
        try:
            if self.emf is not None:
                self.emf.flush()
            if isinstance(self.flusher, LambdaFlusher):
                self.flusher.after_invocation()
        except Exception as exc:
            log.warning("coalmine: cannot end the invocation's metrics: %s", exc)

    def running_version(self, app: str, function: str) -> str | None:
        """In a Lambda, the coalmine version of ``function`` whose target is the Lambda version
        running this code (`coalmine.sdk.lambda_env`); None elsewhere or if none matches."""
        if self.lambda_env is None:
            return None
        snap = self.sync.snapshot(app)
        if snap is None:
            return None
        key = (app, function, snap.revision)
        if key not in self._running:
            if len(self._running) > 256:  # bounded: revisions come and go
                self._running.clear()
            self._running[key] = running_version(snap, function, self.lambda_env)
        return self._running[key]

    # routing data ----------------------------------------------------------------

    def snapshot(self, app: str) -> RoutingSnapshot | None:
        return self.sync.snapshot(app)

    def target(self, app: str, function: str, decision: Decision) -> str | None:
        """Where ``function`` runs for ``decision`` (a handler, URL or Lambda ARN), if known."""
        version = decision.version_of(function)
        snap = self.sync.snapshot(app)
        if version is None or snap is None:
            return None
        return snap.target_of(function, version)

    def status(self, app: str) -> SyncStatus:
        return self.sync.status(app)

    def on_change(self, callback: ChangeCallback) -> Callable[[], None]:
        return self.sync.on_change(callback)

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self.sync.wait_ready(timeout)

    def close(self) -> None:
        """Stop following routing; send the metrics recorded so far (one last flush)."""
        if self.flusher is not None:
            self.flusher.close()
        self.sync.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _no_config(app: str) -> Decision:
    return Decision(
        app,
        None,
        Channel.STABLE,
        _EMPTY,
        Reason.ERROR,
        f"no routing configuration for app {app!r} yet",
    )


def _token_of(context: str | None) -> str | None:
    """The coalmine member of a baggage header, or the value itself."""
    if context is None or not isinstance(context, str):
        return None
    context = context.strip()
    if not context:
        return None
    if "=" in context:
        return find_in_baggage(context)
    return context
