"""The gateway's ASGI application: identify, decide, call the version's target.

``/{function}/{rest...}`` calls that function of the configured app. For each
request the gateway identifies the user (`coalmine.gateway.identity`), takes
the app's snapshot from its `SnapshotSource`, and decides with
`coalmine.core.routing.evaluate`: an incoming ``coalmine`` baggage member
counts only when its signature verifies, so a client cannot choose its
channel. Downstream it forwards the other baggage members plus the signed
context of its own decision, and ``x-coalmine-user``. Every version is
called through the `FunctionTarget` (`coalmine.core.ports`) of its kind of
target: an HTTP URL (`HttpTarget`, `coalmine.gateway.upstream`), a local
handler (`LocalTarget`, `coalmine.gateway.runtime`), a Lambda version through
the Invoke API (`LambdaTarget`, `coalmine.gateway.lambda_target`); a kind
without one is answered 501.

Every response after a decision carries ``x-coalmine-version``,
``x-coalmine-channel`` and, with a release, ``x-coalmine-release``.
``/healthz`` answers locally. `create_gateway` wires a config to the SDK's
routing sync.

Every call of a version is counted per (app, function, version, channel) in
the gateway's `Recorder`: its duration until the response was sent, and an
error when the answer is a 5xx (a handler that raised is a 502) or a 429
(throttled), or the call raised. ``/metrics`` serves those counts to Prometheus (so no function named
``metrics`` can be called through the gateway); with a control plane URL and
an sdk key configured, a `Flusher` sends them to the control plane.

A call that fails (the target raised `CallFailed`) is logged in one line by
`coalmine.gateway.failures.FailureLog`, its traceback rate-limited.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections import Counter
from collections.abc import Mapping

from coalmine.core.context import ContextSigner, ContextTooLarge, find_in_baggage, set_in_baggage
from coalmine.core.errors import InvalidInput
from coalmine.core.model import Channel, Decision, Target, TargetKind
from coalmine.core.ports import Call, FunctionTarget, ManagedSource, SnapshotSource
from coalmine.core.routing import evaluate
from coalmine.core.signing import Rejected
from coalmine.core.snapshot import RoutingSnapshot
from coalmine.core.userkey import encode_header
from coalmine.gateway.asgi import (
    HOP_BY_HOP,
    CallFailed,
    RawHeaders,
    Receive,
    Scope,
    Send,
    send_json,
)
from coalmine.gateway.bearer import JWKS_REFRESH_SECONDS
from coalmine.gateway.config import GatewayConfig
from coalmine.gateway.failures import FailureLog
from coalmine.gateway.identity import Identifier
from coalmine.gateway.lambda_target import LambdaTarget
from coalmine.gateway.paths import unsafe_path
from coalmine.gateway.runtime import LocalTarget
from coalmine.gateway.source import SyncSource
from coalmine.gateway.upstream import HttpTarget
from coalmine.metrics.exposition import FunctionCollector, RecorderCollector, registry, render
from coalmine.metrics.flush import DEFAULT_INTERVAL, Flusher
from coalmine.metrics.recorder import Recorder

__all__ = [
    "CHANNEL_HEADER",
    "METRICS_PATH",
    "OVERRIDE_HEADER",
    "RELEASE_HEADER",
    "REQUEST_ID_HEADER",
    "USER_HEADER",
    "VERSION_HEADER",
    "Gateway",
    "create_gateway",
]

log = logging.getLogger(__name__)

VERSION_HEADER = "x-coalmine-version"
CHANNEL_HEADER = "x-coalmine-channel"
RELEASE_HEADER = "x-coalmine-release"
USER_HEADER = "x-coalmine-user"
"""sent downstream: the user key the gateway decided for"""
OVERRIDE_HEADER = "x-coalmine-override"
"""read from the client: a signed tester override token"""
REQUEST_ID_HEADER = "x-coalmine-request-id"
"""on an answer the gateway made because the call failed: the id its log line names"""

METRICS_PATH = "/metrics"
"""where the gateway serves its Prometheus exposition (a function named metrics is refused)"""

_NOT_FORWARDED = HOP_BY_HOP | {b"host", b"expect", b"baggage"}
_GATEWAYS = (b"x-coalmine-", b"x-forwarded-")
"""header prefixes the gateway sets downstream itself: a client's are dropped"""


class Gateway:
    """The ASGI app of one gateway process, for the one app of its config.

    ``targets`` calls the versions of each kind of target; by default an
    `HttpTarget` and a `LocalTarget` made from ``config``, each replaced by
    the one given for its kind (say, a `MockTarget` in a test).
    """

    def __init__(
        self,
        config: GatewayConfig,
        source: SnapshotSource,
        *,
        targets: Mapping[TargetKind, FunctionTarget] | None = None,
        recorder: Recorder | None = None,
        metrics_interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self.config = config
        self.recorder = recorder if recorder is not None else Recorder()
        """per-version counts of every call; served at ``/metrics``"""
        self.flusher: Flusher | None = None
        """sends the counts to the control plane (with a control plane URL and an sdk key)"""
        if config.control_plane_url is not None and config.sdk_key is not None:
            self.flusher = Flusher(
                self.recorder,
                config.control_plane_url,
                config.sdk_key,
                config.app,
                metrics_interval,
                start=False,
            )
        self.source = source
        self.identifier = Identifier(config.identity, config.anonymous_keyring)
        given = dict(targets or {})
        http = given.pop(TargetKind.HTTP, None)
        if http is None:
            http = HttpTarget(
                pool_size=config.pool_size,
                timeout=config.timeout,
                connect_timeout=config.connect_timeout,
            )
        local = given.pop(TargetKind.LOCAL, None)
        if local is None:
            local = LocalTarget(
                workers=config.local_workers,
                timeout=config.timeout,
                max_body=config.max_local_body,
            )
        lam = given.pop(TargetKind.LAMBDA, None)
        if lam is None:
            lam = LambdaTarget(
                timeout=config.timeout,
                connect_timeout=config.connect_timeout,
                pool_size=config.pool_size,
            )
        self.targets: dict[TargetKind, FunctionTarget] = {
            TargetKind.HTTP: http,
            TargetKind.LOCAL: local,
            TargetKind.LAMBDA: lam,
            **given,
        }
        """the `FunctionTarget` of each kind of target; a kind without one answers 501"""
        self._functions: tuple[RoutingSnapshot | None, frozenset[str]] = (None, frozenset())
        self._resolved: tuple[RoutingSnapshot | None, dict[tuple[str, str], _Resolved]] = (
            None,
            {},
        )
        self._signers: tuple[int, dict[_SignerKey, ContextSigner]] = (0, {})
        self.rejected: Counter[tuple[str, str]] = Counter()
        """(token, kind) -> how many incoming contexts and overrides were not honoured: a
        replayed context shows as ``("context", "other_user")``"""
        self._jwks_task: asyncio.Task[None] | None = None
        self.failures = FailureLog()
        """one log line per failed call; tracebacks rate-limited per kind of failure"""

    async def _refresh_jwks(self) -> None:
        """Fetch the JWKS URL's keys off the event loop; a failure keeps the last keys."""
        try:
            n = await asyncio.get_running_loop().run_in_executor(None, self.identifier.refresh_jwks)
            log.info("JWKS %s: %d signing keys", self.config.identity.jwt_jwks_url, n)
        except Exception as exc:
            log.warning(
                "cannot fetch the JWKS %s (JWTs signed with keys not yet fetched are not"
                " trusted): %s",
                self.config.identity.jwt_jwks_url,
                exc,
            )

    async def _keep_jwks(self) -> None:
        while True:
            await asyncio.sleep(JWKS_REFRESH_SECONDS)
            await self._refresh_jwks()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1003})

    # -- lifecycle -----------------------------------------------------------

    async def startup(self) -> None:
        log.info("gateway for app %s: %s", self.config.app, self.config.identity.describe())
        for target in self.targets.values():
            await target.start()
        if self.identifier.bearer is not None and self.identifier.bearer.jwks_url is not None:
            await self._refresh_jwks()
            self._jwks_task = asyncio.create_task(self._keep_jwks())
        if isinstance(self.source, ManagedSource):
            await self.source.start()
        if self.flusher is not None:
            self.flusher.start()

    async def shutdown(self) -> None:
        if self._jwks_task is not None:
            self._jwks_task.cancel()
        try:
            if isinstance(self.source, ManagedSource):
                await self.source.close()
        finally:
            for target in self.targets.values():
                await target.close()
            if self.flusher is not None:  # one last flush, off the event loop
                await asyncio.get_running_loop().run_in_executor(None, self.flusher.close)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("gateway start failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.shutdown()
                except Exception as exc:
                    log.exception("gateway shutdown failed")
                    await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- requests ------------------------------------------------------------

    def _known(self, snapshot: RoutingSnapshot) -> frozenset[str]:
        cached, names = self._functions
        if cached is not snapshot:
            state = snapshot.state
            found = set(state.versions) | set(snapshot.targets)
            if state.release is not None:
                found |= set(state.release.baseline)
            names = frozenset(found)
            self._functions = (snapshot, names)
        return names

    def _target(self, snapshot: RoutingSnapshot, function: str, version: str) -> _Resolved:
        """`_resolve`, once per snapshot and version (a proxy's hot path)."""
        cached, resolved_by_version = self._resolved
        if cached is not snapshot:
            resolved_by_version = {}
            self._resolved = (snapshot, resolved_by_version)
        key = (function, version)
        resolved = resolved_by_version.get(key)
        if resolved is None:
            try:
                resolved = _resolve(snapshot, function, version, self.targets)
            except CallFailed as exc:
                resolved = exc
            resolved_by_version[key] = resolved
        return resolved

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self.config.app
        path: str = scope["path"]
        if path == "/healthz":
            snap = self.source.snapshot(app)
            revision = snap.revision if snap is not None else None
            await send_json(send, 200, {"status": "ok", "app": app, "revision": revision})
            return
        if path == METRICS_PATH:
            await self._metrics(scope, send)
            return
        refused = unsafe_path(scope.get("raw_path") or path.encode())
        if refused is not None:
            await send_json(send, 400, {"detail": refused})
            return
        function = path[1:].partition("/")[0]
        if not function:
            await send_json(send, 404, {"detail": "no function in the path: call /{function}/..."})
            return
        if function == METRICS_PATH[1:]:
            await send_json(
                send,
                404,
                {
                    "detail": f"{METRICS_PATH} is the gateway's Prometheus metrics, not a function:"
                    " a function named metrics cannot be called through the gateway; rename it"
                },
            )
            return
        snapshot = self.source.snapshot(app)
        if snapshot is None:
            await send_json(send, 503, {"detail": f"no routing configuration for app {app} yet"})
            return
        if function not in self._known(snapshot):
            await send_json(send, 404, {"detail": f"app {app} has no function named {function}"})
            return

        headers = _header_map(scope["headers"])
        now = time.time()
        secure = scope["scheme"] == "https" or headers.get("x-forwarded-proto") == "https"
        identity = self.identifier.identify(headers, now=now, secure=secure)
        decision = evaluate(
            snapshot.state,
            identity.user,
            keyring=self.config.keyring,
            now=now,
            context=find_in_baggage(headers.get("baggage")),
            override=headers.get(OVERRIDE_HEADER),
            on_rejected=self._count_rejected,
        )
        version = decision.version_of(function)
        out = list(_decision_headers(decision.channel, version, decision.release_id))
        if identity.set_cookie is not None:
            out.append((b"set-cookie", identity.set_cookie.encode("latin-1")))
        if version is None:
            await send_json(
                send,
                503,
                {"detail": f"function {function} of app {app} has no version to run yet"},
                out,
            )
            return
        started = time.perf_counter()
        try:
            try:
                resolved = self._target(snapshot, function, version)
                if isinstance(resolved, CallFailed):
                    # a fresh exception: raising the cached one would grow its traceback each time
                    raise CallFailed(resolved.status, resolved.detail, **resolved.extra)
                ref, target = resolved
                call = self._call(
                    scope, receive, ref, function, version, decision, headers, identity.user, out
                )
                status = await target.invoke(call, send)
            except CallFailed as exc:
                request_id = exc.request_id or uuid.uuid4().hex
                self.failures.failed(function, version, exc, request_id)
                # the id of the log line, for whoever reports the failure
                out.append((REQUEST_ID_HEADER.encode(), request_id.encode("latin-1")))
                await send_json(send, exc.status, exc.body(), out)
                status = exc.status
        except Exception:
            self._record(function, version, decision, started, error=True)
            raise
        # a throttled version (429) fails its users as surely as a 5xx
        self._record(function, version, decision, started, error=status >= 500 or status == 429)

    def _count_rejected(self, what: str, rejected: Rejected) -> None:
        self.rejected["context" if what == "routing context" else "override", rejected.kind] += 1

    def _record(
        self, function: str, version: str, decision: Decision, started: float, *, error: bool
    ) -> None:
        """Count one call; never raises into the request path."""
        try:
            duration = (time.perf_counter() - started) * 1000.0
            self.recorder.record(
                self.config.app, function, version, decision.channel, duration, error=error
            )
        except Exception as exc:
            log.warning("cannot record a call of %s %s: %s", function, version, exc)

    async def _metrics(self, scope: Scope, send: Send) -> None:
        accept = _header_map(scope["headers"]).get("accept")
        rejected = self.rejected
        collectors: list[RecorderCollector | FunctionCollector] = [
            RecorderCollector(self.recorder, flusher=self.flusher),
            FunctionCollector(
                "coalmine_gateway_tokens_rejected",
                "Incoming routing contexts and overrides not honoured, by token and why"
                " (other_user: a context replayed by another identity; unbound: a context"
                " that names no user; bad_signature, expired, ...).",
                ("token", "kind"),
                lambda: [(key, float(n)) for key, n in list(rejected.items())],
                counter=True,
            ),
        ]
        outcomes = getattr(self.targets.get(TargetKind.LAMBDA), "outcomes", None)
        if isinstance(outcomes, Counter):
            collectors.append(
                FunctionCollector(
                    "coalmine_lambda_outcomes",
                    "Lambda calls that did not answer normally (function_error, timeout,"
                    " throttled, invoke_failed), per function version.",
                    ("function", "version", "outcome"),
                    lambda: [(key, float(n)) for key, n in list(outcomes.items())],
                    counter=True,
                )
            )
        body, content_type = render(registry(*collectors), accept)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", content_type.encode("latin-1")),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _call(
        self,
        scope: Scope,
        receive: Receive,
        ref: str,
        function: str,
        version: str,
        decision: Decision,
        headers: dict[str, str],
        user: str,
        out: RawHeaders,
    ) -> Call:
        """The call to make of the version's target ``ref``, with the signed context."""
        token = self._token(decision, user)
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        slash = raw_path.find(b"/", 1)
        client = scope.get("client")
        return Call(
            target=ref,
            function=function,
            version=version,
            decision=decision,
            method=scope["method"],
            path=scope["path"],
            raw_rest=b"" if slash < 0 else raw_path[slash:],
            query=scope.get("query_string", b""),
            headers=_forwarded(scope, headers, token, user),
            receive=receive,
            has_body=headers.get("content-length", "0") != "0" or "transfer-encoding" in headers,
            token=token,
            source_ip=client[0] if client else "",
            response_headers=out,
        )

    def _token(self, decision: Decision, user: str) -> str | None:
        """The signed context of ``decision``, bound to ``user``: the identity it was decided
        for. Another identity that replays it is decided afresh.

        Its expiry is whole seconds, so one `ContextSigner` per decision and
        second builds what does not depend on the user; each request adds its
        user's keyed hash and one HMAC (signing from scratch per request
        doubled the gateway's routing CPU: docs/benchmarks.md).
        """
        keyring = self.config.keyring
        if keyring is None or decision.release_id is None:
            return None
        now = time.time()
        ttl = self.config.context_ttl
        second = int(now + ttl)
        held, signers = self._signers
        if held != second:
            signers = {}
            self._signers = (second, signers)
        key = (
            decision.app,
            decision.release_id,
            decision.channel,
            tuple(decision.versions.items()),
            decision.expires_at,  # a pinned decision's context keeps its upstream expiry
        )  # not the decision's binding: every context here is bound to ``user``
        signer = signers.get(key)
        if signer is None:
            signer = signers[key] = ContextSigner(decision, keyring, expires_at=second)
        try:
            return signer.sign(user)
        except ContextTooLarge as exc:
            log.warning("routing context not propagated: %s", exc)
            return None


def _header_map(raw: RawHeaders) -> dict[str, str]:
    """Lowercase header names to values; repeated headers joined (cookies with ``; ``)."""
    headers: dict[str, str] = {}
    for k, v in raw:
        name, value = k.decode("latin-1"), v.decode("latin-1")
        if name in headers:
            value = headers[name] + ("; " if name == "cookie" else ",") + value
        headers[name] = value
    return headers


_Resolved = tuple[str, FunctionTarget] | CallFailed
"""a version's target reference and what calls it, or why it cannot be called"""
_SignerKey = tuple[str, str, Channel, tuple[tuple[str, str], ...], int | None]


def _resolve(
    snapshot: RoutingSnapshot,
    function: str,
    version: str,
    targets: Mapping[TargetKind, FunctionTarget],
) -> tuple[str, FunctionTarget]:
    """The version's target reference and what calls it, or `CallFailed` saying why none can."""
    ref = snapshot.target_of(function, version)
    if ref is None:
        raise CallFailed(
            502, f"no target for {function} {version} in the routing snapshot of app {snapshot.app}"
        )
    try:
        kind = Target.parse(ref).kind
    except InvalidInput as exc:
        raise CallFailed(502, f"{function} {version} has an unusable target: {exc}") from None
    target = targets.get(kind)
    if target is None:
        if kind is TargetKind.LAMBDA:
            detail = (
                f"Lambda targets are not supported by the gateway yet ({function} {version}"
                f" is {ref}); register an HTTP or local target, or call the Lambda directly"
            )
        else:
            detail = (
                f"{kind} targets are not supported by this gateway ({function} {version} is {ref})"
            )
        raise CallFailed(501, detail)
    return ref, target


@functools.lru_cache(maxsize=1024)
def _decision_headers(
    channel: Channel, version: str | None, release_id: str | None
) -> tuple[tuple[bytes, bytes], ...]:
    """The ``x-coalmine-*`` response headers (cached: a release has few distinct ones)."""
    out = [(CHANNEL_HEADER.encode(), str(channel).encode())]
    if version is not None:
        out.append((VERSION_HEADER.encode(), version.encode()))
    if release_id is not None:
        out.append((RELEASE_HEADER.encode(), release_id.encode()))
    return tuple(out)


def _forwarded(scope: Scope, headers: dict[str, str], token: str | None, user: str) -> RawHeaders:
    """The request headers to send downstream.

    Drops hop-by-hop headers (and those the Connection header names), the
    client's ``x-coalmine-*`` headers and its ``coalmine`` baggage member;
    adds the gateway's signed context, ``x-coalmine-user`` and ``x-forwarded-*``.
    """
    connection = headers.get("connection")
    drop = _NOT_FORWARDED
    if connection:
        drop = drop | {t.strip().lower().encode("latin-1") for t in connection.split(",")}
    out: RawHeaders = [
        (k, v) for k, v in scope["headers"] if k not in drop and not k.startswith(_GATEWAYS)
    ]
    baggage = set_in_baggage(headers.get("baggage"), token)
    if baggage:
        out.append((b"baggage", baggage.encode("latin-1")))
    out.append((USER_HEADER.encode(), encode_header(user).encode("ascii")))
    client = scope.get("client")
    forwarded_for = headers.get("x-forwarded-for")
    if client:
        forwarded_for = f"{forwarded_for}, {client[0]}" if forwarded_for else client[0]
    if forwarded_for:
        out.append((b"x-forwarded-for", forwarded_for.encode("latin-1")))
    proto = headers.get("x-forwarded-proto") or str(scope["scheme"])
    out.append((b"x-forwarded-proto", proto.encode("latin-1")))
    host = headers.get("x-forwarded-host", headers.get("host"))
    if host:
        out.append((b"x-forwarded-host", host.encode("latin-1")))
    return out


def create_gateway(config: GatewayConfig, source: SnapshotSource | None = None) -> Gateway:
    """A gateway for ``config``: with ``source``, or following the control plane.

    Without a source the gateway follows the app's routing stream through the
    SDK (``config.control_plane_url`` and ``config.sdk_key`` are then
    required) and keeps routing with the last snapshot when the control plane
    is unreachable.
    """
    if source is None:
        if config.control_plane_url is None or config.sdk_key is None:
            raise InvalidInput(
                "a gateway without a snapshot source needs the control plane URL and an sdk key"
            )
        source = SyncSource(
            config.control_plane_url, config.sdk_key, config.app, cache_dir=config.cache_dir
        )
    return Gateway(config, source)
