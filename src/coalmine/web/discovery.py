"""Client-side routing: one user's discovery answer, and its OFREP flag evaluations.

A client that calls functions itself (a browser, a mobile app) needs to know,
for one user, which version of every function to call and where, and whether
that user is in the canary channel. `discover` computes that answer from an
app's `RoutingSnapshot` with `coalmine.core.routing.evaluate`, the one routing
function the SDK and the gateway also call (DESIGN rule 1), so the three never
disagree. Everything here is pure given the snapshot, the settings and ``now``.

The answer carries a signed routing context when the control plane holds
signing keys: the client sends it along (``baggage: coalmine=<context>``) and
its whole chain runs one version set. The context is bound to the user it
was asked for: replayed by another identity, it is not honoured. The context's expiry is rounded to a
`CONTEXT_WINDOW_SECONDS` window, so the answer (and its ETag) stays the same
within a window instead of changing every second.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from coalmine.core.context import DEFAULT_TTL_SECONDS, ContextSigner, ContextTooLarge
from coalmine.core.errors import InvalidInput
from coalmine.core.model import Decision, Reason
from coalmine.core.routing import evaluate
from coalmine.core.signing import Keyring
from coalmine.core.snapshot import RoutingSnapshot

__all__ = [
    "CONTEXT_WINDOW_SECONDS",
    "GATEWAY_ENV",
    "OPENFEATURE_REASONS",
    "SIGNING_KEYS_ENV",
    "DiscoverySettings",
    "action_url",
    "answer_bytes",
    "answer_etag",
    "canonical",
    "discover",
    "is_url",
    "ofrep_flag",
    "ofrep_flags",
    "same_answer",
    "tagged",
]

GATEWAY_ENV = "COALMINE_GATEWAY_URL"
SIGNING_KEYS_ENV = "COALMINE_SIGNING_KEYS"
CONTEXT_WINDOW_SECONDS = 300
_SIGNERS = 256
"""a signed context's expiry is rounded down to this window (it lives ttl - window at least)"""

OPENFEATURE_REASONS: Mapping[Reason, str] = {
    Reason.COHORT: "SPLIT",
    Reason.TARGETED: "TARGETING_MATCH",
    Reason.OVERRIDE: "TARGETING_MATCH",
    Reason.PINNED: "STATIC",
    Reason.ROLLED_BACK: "DISABLED",
    Reason.PROMOTED: "STATIC",
    Reason.NO_RELEASE: "DEFAULT",
    Reason.ERROR: "ERROR",
}
"""coalmine's reason -> the OpenFeature resolution reason an OFREP answer carries"""


def is_url(target: str | None) -> bool:
    return target is not None and target.startswith(("http://", "https://"))


@dataclass(frozen=True, slots=True)
class DiscoverySettings:
    """What the control plane adds to a decision: signing keys and the gateway's base URL."""

    keyring: Keyring | None = None
    gateway_url: str | None = None
    """``<gateway_url>/<function>`` is the URL of a version whose target is not a URL"""
    context_ttl: float = DEFAULT_TTL_SECONDS
    _signers: dict[tuple[object, ...], ContextSigner] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.gateway_url is not None:
            if not is_url(self.gateway_url):
                raise InvalidInput(
                    f"gateway URL {self.gateway_url!r} must start with http:// or https://"
                )
            object.__setattr__(self, "gateway_url", self.gateway_url.rstrip("/"))
        if self.context_ttl < 2 * CONTEXT_WINDOW_SECONDS:
            raise InvalidInput(f"context_ttl must be at least {2 * CONTEXT_WINDOW_SECONDS} seconds")

    @classmethod
    def load(
        cls,
        keyring: Keyring | None = None,
        gateway_url: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> DiscoverySettings:
        """The given values, else ``COALMINE_SIGNING_KEYS`` and ``COALMINE_GATEWAY_URL``."""
        env = os.environ if env is None else env
        if keyring is None and env.get(SIGNING_KEYS_ENV, "").strip():
            try:
                keyring = Keyring.parse(env[SIGNING_KEYS_ENV])
            except InvalidInput as exc:
                raise InvalidInput(f"{SIGNING_KEYS_ENV}: {exc}") from exc
        if gateway_url is None:
            gateway_url = env.get(GATEWAY_ENV, "").strip() or None
        return cls(keyring, gateway_url)

    def window(self, now: float) -> int:
        """The start of the context window ``now`` falls in."""
        return int(now) - int(now) % CONTEXT_WINDOW_SECONDS

    def signer(self, decision: Decision, now: float) -> ContextSigner:
        """The signer of ``decision``'s contexts in ``now``'s window (needs a keyring).

        What a context says but its user (app, release, channel, versions,
        expiry) is shared by every user of a channel in a window: its signer
        is built once and kept (`ContextSigner`), at most `_SIGNERS` of them.
        """
        assert self.keyring is not None
        expires_at = int(self.window(now) + self.context_ttl)
        if decision.expires_at is not None:  # pinned: its context's expiry bounds this one
            expires_at = min(expires_at, decision.expires_at)
        key = (
            decision.app,
            decision.release_id,
            decision.channel,
            tuple(sorted(decision.versions.items())),
            expires_at,
            decision.binding,  # signed in only for a context asked for no user
        )
        signer = self._signers.get(key)
        if signer is None:
            if len(self._signers) >= _SIGNERS:
                self._signers.clear()  # old windows, old releases: rebuilt on demand
            signer = self._signers[key] = ContextSigner(
                decision, self.keyring, expires_at=expires_at
            )
        return signer


def action_url(function: str, target: str | None, gateway_url: str | None) -> str | None:
    """Where a client calls a version: its own http(s) target, else through the gateway."""
    if is_url(target):
        return target
    if gateway_url is not None:
        return f"{gateway_url}/{function}"
    return None


def discover(
    snapshot: RoutingSnapshot,
    user: str,
    settings: DiscoverySettings,
    *,
    now: float,
    context: str | None = None,
    override: str | None = None,
) -> dict[str, Any]:
    """One user's answer (see docs/discovery.md); ``context`` pins like any hop's."""
    state = snapshot.state
    decision = evaluate(
        state, user, keyring=settings.keyring, now=now, context=context, override=override
    )
    rel = state.release
    release = (
        None if rel is None else {"id": rel.id, "phase": str(rel.phase), "exposure": state.exposure}
    )
    actions = {
        fn: {"version": v, "url": action_url(fn, snapshot.target_of(fn, v), settings.gateway_url)}
        for fn, v in sorted(decision.versions.items())
    }
    detail = decision.detail
    signed: str | None = None
    if settings.keyring is not None and decision.release_id is not None:
        try:
            signed = settings.signer(decision, now).sign(user)
        except ContextTooLarge as exc:
            detail = f"{detail}; {exc}" if detail else str(exc)
    return {
        "app": state.app,
        "user": user,
        "channel": str(decision.channel),
        "reason": str(decision.reason),
        "detail": detail,
        "release": release,
        "versions": dict(sorted(decision.versions.items())),
        "actions": actions,
        "context": signed,
        "revision": snapshot.revision,
    }


def canonical(data: Any) -> bytes:
    """Compact, key-sorted JSON: the bytes an answer is sent and hashed as."""
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def _without_revision(answer: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k != "revision"}


def answer_etag(answer: Any) -> str:
    """A weak ETag: the hash of the answer without ``revision``.

    Revisions move with every change of the app; the ETag moves only when
    what this user should do moves (or the signed context is renewed).
    """
    body = _without_revision(answer) if isinstance(answer, Mapping) else answer
    return _etag(canonical(body))


def tagged(data: Mapping[str, Any]) -> tuple[bytes, str]:
    """``canonical(data)`` and its `answer_etag`, from one encoding (``data`` has no revision)."""
    if "revision" in data:
        raise ValueError("tagged() is for data without a revision; use answer_etag")
    content = canonical(data)
    return content, _etag(content)


def answer_bytes(answer: Mapping[str, Any]) -> tuple[bytes, str]:
    """An answer's `canonical` bytes and its `answer_etag`, from one encoding.

    In an answer's canonical text its revision is ``,"revision":N,`` once, at
    the top level: the answer's keys are fixed and sorted (``release`` before
    it, ``user`` after), every quote inside a string is escaped, and a nested
    ``revision`` (a function named so) holds an object or a string, never a
    number. So the text without it is the canonical text of the answer without
    revision, which the ETag hashes.
    """
    content = canonical(answer)
    marker = b',"revision":%d,' % answer["revision"]
    without = content.replace(marker, b",", 1)
    if len(without) != len(content) - len(marker) + 1:  # not an answer of `discover`
        return content, answer_etag(answer)
    return content, _etag(without)


def _etag(content: bytes) -> str:
    return f'W/"{hashlib.sha256(content).hexdigest()[:32]}"'


def same_answer(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Whether two answers tell the user the same thing (revisions aside)."""
    if a is None or b is None:
        return a is b
    return _without_revision(a) == _without_revision(b)


def _metadata(answer: Mapping[str, Any], **extra: str) -> dict[str, str | int | bool]:
    """OFREP metadata holds only strings, numbers and booleans: nulls are left out."""
    release = answer["release"]
    meta: dict[str, str | int | bool | None] = {
        "reason": answer["reason"],
        "channel": answer["channel"],
        "release_id": release["id"] if release else None,
        "exposure": release["exposure"] if release else None,
        "context": answer["context"],
        "detail": answer["detail"],
        **extra,
    }
    return {k: v for k, v in meta.items() if v is not None}


def ofrep_flag(answer: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    """The OFREP evaluation of flag ``key`` from one answer; None for an unknown flag.

    Flag ``<app>``: value and variant the channel. Flag ``<app>.<function>``:
    value the URL to call (the version name when there is none), variant the
    version.
    """
    app = answer["app"]
    reason = OPENFEATURE_REASONS.get(Reason(answer["reason"]), "UNKNOWN")
    if key == app:
        channel = answer["channel"]
        return {
            "key": key,
            "value": channel,
            "variant": channel,
            "reason": reason,
            "metadata": _metadata(answer),
        }
    prefix, dot, function = key.partition(".")
    action = answer["actions"].get(function) if dot and prefix == app else None
    if action is None:
        return None
    return {
        "key": key,
        "value": action["url"] or action["version"],
        "variant": action["version"],
        "reason": reason,
        "metadata": _metadata(answer, function=function),
    }


def ofrep_flags(answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every flag of the app: ``<app>``, then ``<app>.<function>`` for each function.

    Each is what `ofrep_flag` gives for its key; what they share (the
    reason, the metadata) is built once.
    """
    app, channel = answer["app"], answer["channel"]
    reason = OPENFEATURE_REASONS.get(Reason(answer["reason"]), "UNKNOWN")
    shared = _metadata(answer)
    flags = [
        {"key": app, "value": channel, "variant": channel, "reason": reason, "metadata": shared}
    ]
    for function, action in answer["actions"].items():
        flags.append(
            {
                "key": f"{app}.{function}",
                "value": action["url"] or action["version"],
                "variant": action["version"],
                "reason": reason,
                "metadata": {**shared, "function": function},
            }
        )
    return flags
