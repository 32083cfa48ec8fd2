"""The domain model: apps, functions, versions and their targets, releases, decisions.

Plain immutable values with validation at construction. Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING

from coalmine.core.bucketing import BUCKETS, validate_salt
from coalmine.core.errors import InvalidInput

if TYPE_CHECKING:
    from coalmine.core.strategy import Strategy

__all__ = [
    "ACTIVE_PHASES",
    "MAX_EXPOSURE",
    "NAME_PATTERN",
    "ROLLED_BACK_PHASES",
    "TARGET_PATTERN",
    "App",
    "Channel",
    "Decision",
    "Function",
    "Phase",
    "Reason",
    "Release",
    "RouteMode",
    "Target",
    "TargetKind",
    "Targeting",
    "Version",
    "VersionMap",
    "freeze_versions",
    "parse_lambda_function",
    "release_seq",
    "unqualified_lambda_function",
    "validate_exposure",
    "validate_name",
    "validate_version_name",
]

MAX_EXPOSURE = BUCKETS
NAME_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?")
VERSION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_LOCAL_TARGET = re.compile(r"[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
_LAMBDA_ARN = re.compile(
    r"arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:function:[A-Za-z0-9_-]{1,64}:[A-Za-z0-9_$-]{1,128}"
)
_LAMBDA_SHORT = re.compile(r"lambda:[A-Za-z0-9_-]{1,64}:[A-Za-z0-9_$-]{1,128}")
TARGET_PATTERN = (
    rf"^(?:https?://[^\s/]\S*|{_LAMBDA_ARN.pattern}|{_LAMBDA_SHORT.pattern}"
    rf"|(?!lambda:|arn:){_LOCAL_TARGET.pattern})$"
)
"""what `Target.parse` accepts, as one JSON Schema pattern (published in the API schema)"""
"""``lambda:NAME:QUALIFIER``: region and account from the AWS configuration chain"""
_LAMBDA_FUNCTION = re.compile(
    r"(?P<function>(?:arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:function:)?[A-Za-z0-9_-]{1,64})"
    r"(?::(?P<qualifier>[A-Za-z0-9_$-]{1,128}))?"
)

VersionMap = Mapping[str, str]
"""function name -> version name, for every function of an app."""

_RELEASE_SEQ = re.compile(r"(\d{1,18})$")


def release_seq(release_id: str) -> int | None:
    """The sequence number a release id ends with (``shop-12`` -> 12), or None.

    The control plane numbers an app's releases 1, 2, 3... and ends each id
    with its number, so routing can tell a release older than the current one
    (whose contexts are stale) from a newer one it has not seen yet.
    """
    found = _RELEASE_SEQ.search(release_id)
    return int(found.group(1)) if found else None


class Channel(StrEnum):
    STABLE = "stable"
    CANARY = "canary"


class RouteMode(StrEnum):
    USER = "user"
    """Sticky per user: the bucket decides, every function agrees (default)."""
    REQUEST = "request"
    """Per-request weighted random, each hop on its own, as a Lambda weighted alias."""


class Phase(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    PROMOTING = "promoting"
    PROMOTED = "promoted"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


ACTIVE_PHASES = frozenset({Phase.PENDING, Phase.RUNNING, Phase.PAUSED, Phase.PROMOTING})
ROLLED_BACK_PHASES = frozenset({Phase.ROLLING_BACK, Phase.ROLLED_BACK, Phase.FAILED})


class Reason(StrEnum):
    """Why a decision came out as it did. Every decision carries one."""

    COHORT = "cohort"
    """The user's bucket against the release's exposure (or the request's roll)."""
    TARGETED = "targeted"
    """The user is on the release's always-canary or never-canary list."""
    OVERRIDE = "override"
    """A signed tester override chose the channel."""
    PINNED = "pinned"
    """A valid routing context from upstream chose the channel (DESIGN rule 2)."""
    ROLLED_BACK = "rolled_back"
    """The release was rolled back: everyone runs the baseline versions."""
    PROMOTED = "promoted"
    """The release was promoted: everyone runs the candidate versions."""
    NO_RELEASE = "no_release"
    """The app has no release: everyone runs its current versions."""
    ERROR = "error"
    """Bad or missing input: the stable versions, never an exception."""


class TargetKind(StrEnum):
    LOCAL = "local"
    HTTP = "http"
    LAMBDA = "lambda"


def validate_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise InvalidInput(
            f"invalid {what} name {value!r}: use 1-63 lowercase letters, digits, '-' or '_',"
            " starting and ending with a letter or digit"
        )
    return value


def validate_version_name(value: object) -> str:
    if not isinstance(value, str) or not VERSION_PATTERN.fullmatch(value):
        raise InvalidInput(
            f"invalid version name {value!r}: use 1-64 characters from A-Z a-z 0-9 . _ -,"
            " starting with a letter or digit"
        )
    return value


def parse_lambda_function(value: object, what: str) -> tuple[str, str | None]:
    """(function, qualifier or None) of a Lambda function reference.

    A reference is a function name or a function ARN
    (``arn:aws:lambda:REGION:ACCOUNT:function:NAME``), either possibly ending in
    ``:QUALIFIER`` (a version number or an alias). ``what`` names the field in
    the message of the InvalidInput raised for anything else.
    """
    m = _LAMBDA_FUNCTION.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise InvalidInput(
            f"invalid {what} {value!r}: give a Lambda function name (1-64 letters, digits,"
            " '-' or '_') or its ARN, arn:aws:lambda:REGION:ACCOUNT:function:NAME"
        )
    return m.group("function"), m.group("qualifier")


def unqualified_lambda_function(value: object, what: str) -> str:
    """A Lambda function reference (see `parse_lambda_function`) that names no version or
    alias; InvalidInput saying what to drop if it does."""
    function, qualifier = parse_lambda_function(value, what)
    if qualifier is not None:
        raise InvalidInput(
            f"{what} {value!r} names one version or alias ({qualifier!r}):"
            f" give the function itself, {function!r}"
        )
    return function


def validate_exposure(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_EXPOSURE:
        raise InvalidInput(
            f"invalid exposure {value!r}: give basis points, a whole number from 0 to 10000"
        )
    return value


def freeze_versions(versions: Mapping[str, str], what: str = "versions") -> VersionMap:
    """Validate a function -> version map and return a read-only copy."""
    if not isinstance(versions, Mapping):
        raise InvalidInput(f"{what} must be a mapping of function name to version name")
    out: dict[str, str] = {}
    for fn, ver in versions.items():
        out[validate_name(fn, "function")] = validate_version_name(ver)
    return MappingProxyType(dict(sorted(out.items())))


@dataclass(frozen=True, slots=True)
class Target:
    """Where a version runs: a local handler, an HTTP URL, or a Lambda qualified ARN."""

    kind: TargetKind
    ref: str

    @classmethod
    def parse(cls, ref: str) -> Target:
        """Infer the kind from the reference, or raise InvalidInput saying what is accepted."""
        if not isinstance(ref, str) or not ref:
            raise InvalidInput("a version target must be a non-empty string")
        if ref.startswith(("http://", "https://")):
            rest = ref.split("://", 1)[1]
            if not rest or rest.startswith("/") or any(c.isspace() for c in ref):
                raise InvalidInput(
                    f"invalid HTTP target {ref!r}: expected http(s)://host[:port]/path"
                )
            return cls(TargetKind.HTTP, ref)
        if ref.startswith("arn:"):
            if not _LAMBDA_ARN.fullmatch(ref):
                raise InvalidInput(
                    f"invalid Lambda target {ref!r}: expected a qualified function ARN,"
                    " arn:aws:lambda:REGION:ACCOUNT:function:NAME:VERSION_OR_ALIAS"
                    " (a qualifier is required: a version must be immutable)"
                )
            return cls(TargetKind.LAMBDA, ref)
        if ref.startswith("lambda:"):  # `lambda` is a keyword: never a handler's module
            if not _LAMBDA_SHORT.fullmatch(ref):
                raise InvalidInput(
                    f"invalid Lambda target {ref!r}: expected lambda:NAME:VERSION_OR_ALIAS"
                    " (a qualifier is required: a version must be immutable)"
                )
            return cls(TargetKind.LAMBDA, ref)
        if _LOCAL_TARGET.fullmatch(ref):
            return cls(TargetKind.LOCAL, ref)
        raise InvalidInput(
            f"invalid target {ref!r}: use a local handler 'package.module:function',"
            " an http(s):// URL, a Lambda qualified ARN, or lambda:NAME:QUALIFIER"
        )

    def __str__(self) -> str:
        return self.ref


@dataclass(frozen=True, slots=True)
class Version:
    """An immutable, registered build of one function."""

    function: str
    name: str
    target: Target

    def __post_init__(self) -> None:
        validate_name(self.function, "function")
        validate_version_name(self.name)


@dataclass(frozen=True, slots=True)
class Function:
    app: str
    name: str

    def __post_init__(self) -> None:
        validate_name(self.app, "app")
        validate_name(self.name, "function")


@dataclass(frozen=True, slots=True)
class App:
    name: str
    functions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        validate_name(self.name, "app")
        for fn in self.functions:
            validate_name(fn, "function")


@dataclass(frozen=True, slots=True)
class Targeting:
    """Per-release user lists that bypass the bucket (internal testers, excluded users)."""

    always_canary: frozenset[str] = frozenset()
    never_canary: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        both = self.always_canary & self.never_canary
        if both:
            raise InvalidInput(
                "a user cannot be both always-canary and never-canary: "
                + ", ".join(sorted(both)[:5])
            )
        for key in self.always_canary | self.never_canary:
            if not isinstance(key, str) or not key:
                raise InvalidInput("targeted user keys must be non-empty strings")

    def channel_for(self, user_key: str) -> Channel | None:
        if user_key in self.always_canary:
            return Channel.CANARY
        if user_key in self.never_canary:
            return Channel.STABLE
        return None


@dataclass(frozen=True)
class Release:
    """Moving an app from baseline versions to candidate versions.

    ``baseline`` and ``candidate`` name a version for every function of the app;
    a function the release does not change has the same version in both.
    """

    id: str
    app: str
    baseline: VersionMap
    candidate: VersionMap
    salt: str
    strategy: Strategy
    route_mode: RouteMode = RouteMode.USER
    exposure: int = 0
    phase: Phase = Phase.PENDING
    targeting: Targeting = field(default_factory=Targeting)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not VERSION_PATTERN.fullmatch(self.id):
            raise InvalidInput(f"invalid release id {self.id!r}")
        validate_name(self.app, "app")
        validate_salt(self.salt)
        validate_exposure(self.exposure)
        object.__setattr__(self, "baseline", freeze_versions(self.baseline, "baseline"))
        object.__setattr__(self, "candidate", freeze_versions(self.candidate, "candidate"))
        if set(self.baseline) != set(self.candidate):
            missing = sorted(set(self.baseline) ^ set(self.candidate))
            raise InvalidInput(
                "baseline and candidate must name a version for the same functions;"
                f" differing: {', '.join(missing)}"
            )
        if not self.baseline:
            raise InvalidInput("a release needs at least one function")
        if self.baseline == self.candidate:
            raise InvalidInput(
                "the candidate versions are the baseline versions: nothing to release"
            )
        object.__setattr__(self, "route_mode", RouteMode(self.route_mode))
        object.__setattr__(self, "phase", Phase(self.phase))

    @classmethod
    def start(
        cls,
        *,
        id: str,
        app: str,
        current: Mapping[str, str],
        changes: Mapping[str, str],
        salt: str,
        strategy: Strategy,
        route_mode: RouteMode = RouteMode.USER,
        targeting: Targeting | None = None,
    ) -> Release:
        """A pending release that moves ``changes`` on top of the app's ``current`` versions."""
        unknown = sorted(set(changes) - set(current))
        if unknown:
            raise InvalidInput(f"the app has no function named {', '.join(unknown)}")
        return cls(
            id=id,
            app=app,
            baseline=current,
            candidate={**current, **changes},
            salt=salt,
            strategy=strategy,
            route_mode=route_mode,
            targeting=targeting or Targeting(),
        )

    @property
    def changed_functions(self) -> tuple[str, ...]:
        return tuple(fn for fn in self.baseline if self.baseline[fn] != self.candidate[fn])

    def versions(self, channel: Channel) -> VersionMap:
        return self.candidate if channel is Channel.CANARY else self.baseline


@dataclass(frozen=True, slots=True)
class Decision:
    """Which channel and versions one user gets for an app; what is propagated."""

    app: str
    release_id: str | None
    channel: Channel
    versions: VersionMap
    reason: Reason
    detail: str | None = None
    """what a person needs to know: the error, or an ignored context or override"""
    binding: str | None = field(default=None, compare=False)
    """the keyed hash of the user this decision is for (`coalmine.core.context.bind_user`),
    which the routing context signed from it carries: set by the SDK's routers, and by a
    context the decision was pinned by (so a hop that does not know its user passes it on).
    Not part of the answer: two decisions that differ only here are equal."""
    expires_at: int | None = field(default=None, compare=False)
    """the expiry (Unix seconds) of the routing context this decision was pinned by: a
    context signed from it never outlives it (`coalmine.core.context.ContextSigner`), so
    re-signing a chain never extends it. None for a decision made afresh."""

    @property
    def is_canary(self) -> bool:
        return self.channel is Channel.CANARY

    def version_of(self, function: str) -> str | None:
        return self.versions.get(function)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "app": self.app,
            "release_id": self.release_id,
            "channel": str(self.channel),
            "versions": dict(self.versions),
            "reason": str(self.reason),
        }
        if self.detail is not None:
            out["detail"] = self.detail
        return out
