"""Analysis settings: what the judge checks every interval, and how verdicts add up.

Read from a release's ``analysis`` object, every field optional::

    {"interval": "30s", "min_requests": 200, "failure_limit": 1,
     "max_inconclusive": 5, "inconclusive": "pause", "power": 0.9, "max_wait": "1h",
     "idle": "pause",
     "metrics": {"error_rate": {"max_increase_pp": 1.0, "confidence": 0.99},
                 "latency_p99": {"max_increase_pct": 20},
                 "latency_p50": null},
     "custom": [{"name": "queue_lag_ms", "max_increase_pct": 10}]}

``metrics`` is merged over the defaults (error rate, p50, p95, p99); ``null``
turns a default metric off. Latency metrics are named ``latency_pNN`` where
NN are the quantile's decimals (``p50``, ``p95``, ``p99``, ``p999``).
``power`` is the chance the judge must have of catching a regression exactly
at the limits before a step may advance (the evidence a step waits for, see
`coalmine.core.stats.evidence_needed`), and ``max_wait`` how long a step whose
hold is over may wait for that evidence before the release pauses. Every
error message names the field and says what to write instead.

A function that has served no call in either channel since traffic started
is *idle*: it is not judged (its verdict says so) and does not hold the
release's steps. ``idle`` says what a release whose changed functions are
*all* idle does: ``pause`` (the default for settings you write: DESIGN rule
8, no evidence, no promotion) or ``clock`` (the steps go by the strategy,
each run saying nothing was judged: the judge a release gets when it gives
no settings, see `coalmine.controller.analysis_settings`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from coalmine.core.errors import InvalidInput
from coalmine.core.model import NAME_PATTERN
from coalmine.core.strategy import format_duration, parse_duration

__all__ = [
    "DEFAULT_LATENCY",
    "MAX_INTERVAL_SECONDS",
    "MAX_WAIT_SECONDS",
    "AnalysisSettings",
    "CustomCheck",
    "ErrorRateCheck",
    "IdlePolicy",
    "InconclusivePolicy",
    "LatencyCheck",
    "judged",
    "latency_metric_name",
]

MAX_INTERVAL_SECONDS = 24 * 3600
MAX_WAIT_SECONDS = 7 * 24 * 3600
_LATENCY_NAME = re.compile(r"latency_p(\d{2,4})")
_TOP_FIELDS = (
    "interval",
    "min_requests",
    "failure_limit",
    "max_inconclusive",
    "inconclusive",
    "power",
    "max_wait",
    "idle",
    "metrics",
    "custom",
)


class InconclusivePolicy(StrEnum):
    """What a run of inconclusive intervals longer than ``max_inconclusive`` does, and
    whether a step waits for the judge's evidence."""

    PAUSE = "pause"
    """Pause the release and say why (an operator resumes or rolls back)."""
    CONTINUE = "continue"
    """Keep stepping: the steps go by the clock unless the canary fails, and the release
    is promoted on schedule without a verdict (the owner's opt-out of waiting for
    evidence)."""


class IdlePolicy(StrEnum):
    """What a release does while none of its changed functions has served a call."""

    PAUSE = "pause"
    """Wait for evidence, and pause once the step's hold is over (DESIGN rule 8)."""
    CLOCK = "clock"
    """Step by the strategy's clock until a function serves calls (then the judge gates)."""


def _fraction(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{what} must be a number, got {value!r}")
    try:
        out = float(value)
    except OverflowError:  # an int beyond any float
        out = math.inf
    if not math.isfinite(out):
        raise InvalidInput(f"{what} must be a finite number, got {out!r}")
    return out


def _confidence(value: object, what: str) -> float:
    c = _fraction(value, what)
    if not 0.5 <= c <= 0.9999:
        raise InvalidInput(
            f"{what} {value!r} is out of range: use a probability from 0.5 to 0.9999, e.g. 0.99"
        )
    return c


def _whole(value: object, what: str, low: int, high: int, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{what} {value!r} must be a whole number from {low} to {high}{hint}")
    return value


def latency_metric_name(quantile: float) -> str:
    """``0.99`` -> ``latency_p99``, ``0.5`` -> ``latency_p50``, ``0.999`` -> ``latency_p999``."""
    digits = format(Decimal(repr(quantile)), "f").split(".", 1)[1] if quantile < 1 else ""
    return f"latency_p{digits.ljust(2, '0')}"


@dataclass(frozen=True, slots=True)
class ErrorRateCheck:
    """Catch a canary whose error rate is ``max_increase_pp`` percentage points above
    stable's: the sequential test must show it above stable at ``confidence``, and the
    measured increase must be beyond half the limit."""

    max_increase_pp: float = 1.0
    confidence: float = 0.99

    def __post_init__(self) -> None:
        pp = _fraction(self.max_increase_pp, "error_rate.max_increase_pp")
        if not 0 < pp <= 100:
            raise InvalidInput(
                f"error_rate.max_increase_pp {self.max_increase_pp!r} must be above 0 and at"
                " most 100 (percentage points, e.g. 1.0)"
            )
        object.__setattr__(self, "max_increase_pp", pp)
        object.__setattr__(
            self, "confidence", _confidence(self.confidence, "error_rate.confidence")
        )

    def to_dict(self) -> dict[str, Any]:
        return {"max_increase_pp": self.max_increase_pp, "confidence": self.confidence}


@dataclass(frozen=True, slots=True)
class LatencyCheck:
    """Catch a canary whose latency quantile is ``max_increase_pct`` percent above
    stable's: the sequential test of its share of requests slower than stable's quantile
    must show it above stable at ``confidence``, and the measured increase must be beyond
    half the limit."""

    quantile: float
    max_increase_pct: float = 20.0
    confidence: float = 0.99

    def __post_init__(self) -> None:
        q = _fraction(self.quantile, "a latency quantile")
        if not 0 < q < 1 or len(latency_metric_name(q)) > len("latency_p9999"):
            raise InvalidInput(
                f"latency quantile {self.quantile!r} must be above 0 and below 1"
                " with at most 4 decimals (0.99 is p99)"
            )
        object.__setattr__(self, "quantile", q)
        pct = _fraction(self.max_increase_pct, f"{self.name}.max_increase_pct")
        if not 0 < pct <= 10_000:
            raise InvalidInput(
                f"{self.name}.max_increase_pct {self.max_increase_pct!r} must be above 0"
                " (a percentage, e.g. 20 for 'no more than 20% slower')"
            )
        object.__setattr__(self, "max_increase_pct", pct)
        object.__setattr__(
            self, "confidence", _confidence(self.confidence, f"{self.name}.confidence")
        )

    @property
    def name(self) -> str:
        return latency_metric_name(self.quantile)

    def to_dict(self) -> dict[str, Any]:
        return {"max_increase_pct": self.max_increase_pct, "confidence": self.confidence}


@dataclass(frozen=True, slots=True)
class CustomCheck:
    """A metric the caller measures (queue lag, cost per request, ...), higher is worse.

    Give exactly one limit: ``max_increase_pct`` (relative to stable) or
    ``max_increase`` (absolute, in the metric's own unit).
    """

    name: str
    max_increase_pct: float | None = None
    max_increase: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_PATTERN.fullmatch(self.name):
            raise InvalidInput(
                f"invalid custom metric name {self.name!r}: use 1-63 lowercase letters,"
                " digits, '-' or '_'"
            )
        if self.name == "error_rate" or _LATENCY_NAME.fullmatch(self.name):
            raise InvalidInput(
                f"custom metric name {self.name!r} is a built-in metric's; configure it"
                " under 'metrics' or choose another name"
            )
        if (self.max_increase_pct is None) == (self.max_increase is None):
            raise InvalidInput(
                f"custom metric {self.name!r}: give exactly one of max_increase_pct (relative,"
                " e.g. 10) or max_increase (absolute, in the metric's unit)"
            )
        if self.max_increase_pct is not None:
            pct = _fraction(self.max_increase_pct, f"{self.name}.max_increase_pct")
            if pct <= 0:
                raise InvalidInput(f"{self.name}.max_increase_pct must be above 0, got {pct!r}")
            object.__setattr__(self, "max_increase_pct", pct)
        if self.max_increase is not None:
            inc = _fraction(self.max_increase, f"{self.name}.max_increase")
            if inc < 0:
                raise InvalidInput(f"{self.name}.max_increase must be >= 0, got {inc!r}")
            object.__setattr__(self, "max_increase", inc)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.max_increase_pct is not None:
            out["max_increase_pct"] = self.max_increase_pct
        if self.max_increase is not None:
            out["max_increase"] = self.max_increase
        return out


DEFAULT_LATENCY = (LatencyCheck(0.5), LatencyCheck(0.95), LatencyCheck(0.99))
"""p50, p95 and p99, each allowed 20% worse than stable, at 99% confidence."""


@dataclass(frozen=True, slots=True)
class AnalysisSettings:
    """How a release is analysed: the judge's checks and the verdict limits."""

    interval: float = 30.0
    """seconds between verdicts (the tests are valid at every look, so looking often costs
    no false rollbacks: it only catches a regression sooner)"""
    min_requests: int = 200
    """below this many requests on either side, every metric is inconclusive"""
    failure_limit: int = 1
    """consecutive failed intervals that roll the release back (the tests are valid at every
    look, so one is enough; more only delay a rollback)"""
    max_inconclusive: int = 5
    """consecutive inconclusive intervals allowed before ``inconclusive`` applies"""
    inconclusive: InconclusivePolicy = InconclusivePolicy.PAUSE
    power: float = 0.9
    """the chance of catching a regression exactly at the limits that a step waits for"""
    max_wait: float = 3600.0
    """seconds a step whose hold is over may wait for that evidence before the release pauses"""
    idle: IdlePolicy = IdlePolicy.PAUSE
    """what a release does while none of its changed functions has served a call"""
    error_rate: ErrorRateCheck | None = field(default_factory=ErrorRateCheck)
    latency: tuple[LatencyCheck, ...] = DEFAULT_LATENCY
    custom: tuple[CustomCheck, ...] = ()

    def __post_init__(self) -> None:
        interval = self.interval
        if isinstance(interval, bool) or not isinstance(interval, int | float):
            raise InvalidInput(f"interval {interval!r} must be a number of seconds")
        if not 1 <= interval <= MAX_INTERVAL_SECONDS:
            raise InvalidInput(
                f"interval {format_duration(interval) if math.isfinite(interval) else interval}"
                " must be from 1s to 24h (e.g. '1m')"
            )
        object.__setattr__(self, "interval", float(interval))
        _whole(self.min_requests, "min_requests", 1, 10**9, " (requests on each side)")
        _whole(self.failure_limit, "failure_limit", 1, 1000, " (consecutive failed intervals)")
        _whole(self.max_inconclusive, "max_inconclusive", 0, 10_000, " (consecutive intervals)")
        power = _fraction(self.power, "power")
        if not 0.5 <= power <= 0.99:
            raise InvalidInput(
                f"power {self.power!r} is out of range: use a probability from 0.5 to 0.99"
                " (the chance of catching a regression at the limits), e.g. 0.9"
            )
        object.__setattr__(self, "power", power)
        wait = self.max_wait
        if isinstance(wait, bool) or not isinstance(wait, int | float):
            raise InvalidInput(f"max_wait {wait!r} must be a number of seconds")
        if not 0 <= wait <= MAX_WAIT_SECONDS:
            raise InvalidInput(
                f"max_wait {format_duration(wait) if math.isfinite(wait) else wait}"
                " must be from 0s to 168h (e.g. '1h')"
            )
        object.__setattr__(self, "max_wait", float(wait))
        try:
            object.__setattr__(self, "inconclusive", InconclusivePolicy(self.inconclusive))
        except ValueError:
            raise InvalidInput(
                f"inconclusive {self.inconclusive!r} must be 'pause' or 'continue'"
            ) from None
        try:
            object.__setattr__(self, "idle", IdlePolicy(self.idle))
        except ValueError:
            raise InvalidInput(
                f"idle {self.idle!r} must be 'pause' (wait for calls, then pause) or 'clock'"
                " (step by the strategy while no changed function serves a call)"
            ) from None
        if self.error_rate is not None and not isinstance(self.error_rate, ErrorRateCheck):
            raise InvalidInput("error_rate must be an ErrorRateCheck or None")
        latency = tuple(sorted(self.latency, key=lambda c: c.quantile))
        names = [c.name for c in latency]
        if len(set(names)) != len(names):
            raise InvalidInput(f"a latency quantile is configured twice: {', '.join(names)}")
        object.__setattr__(self, "latency", latency)
        custom = tuple(self.custom)
        seen = [c.name for c in custom]
        if len(set(seen)) != len(seen):
            dupes = sorted({n for n in seen if seen.count(n) > 1})
            raise InvalidInput(f"custom metric(s) configured twice: {', '.join(dupes)}")
        object.__setattr__(self, "custom", custom)
        if self.error_rate is None and not latency and not custom:
            raise InvalidInput(
                "analysis checks nothing: keep at least one of error_rate, a latency_pNN"
                " metric, or a custom metric"
            )

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Every metric the judge reports, in the order it reports them."""
        errors = ("error_rate",) if self.error_rate is not None else ()
        return (*errors, *(c.name for c in self.latency), *(c.name for c in self.custom))

    @classmethod
    def parse(cls, spec: object = None) -> AnalysisSettings:
        """Read settings from a mapping (None or ``{}`` gives the defaults)."""
        if spec is None:
            return cls()
        if isinstance(spec, AnalysisSettings):
            return spec
        if not isinstance(spec, Mapping):
            raise InvalidInput(
                "analysis settings must be an object like"
                ' {"interval": "1m", "min_requests": 200, "metrics": {...}}'
            )
        unknown = sorted(set(spec) - set(_TOP_FIELDS))
        if unknown:
            raise InvalidInput(
                f"unknown analysis field(s) {', '.join(map(str, unknown))};"
                f" known fields: {', '.join(_TOP_FIELDS)}"
            )
        kwargs: dict[str, Any] = {}
        if "interval" in spec:
            try:
                kwargs["interval"] = parse_duration(spec["interval"])
            except InvalidInput as exc:
                raise InvalidInput(f"interval: {exc}") from None
        if "max_wait" in spec:
            try:
                kwargs["max_wait"] = parse_duration(spec["max_wait"])
            except InvalidInput as exc:
                raise InvalidInput(f"max_wait: {exc}") from None
        for name in (
            "min_requests",
            "failure_limit",
            "max_inconclusive",
            "inconclusive",
            "power",
            "idle",
        ):
            if name in spec:
                kwargs[name] = spec[name]
        if "metrics" in spec:
            kwargs.update(_parse_metrics(spec["metrics"]))
        if "custom" in spec:
            kwargs["custom"] = _parse_custom(spec["custom"])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The settings in the form `parse` reads (every field written out)."""
        metrics: dict[str, Any] = {
            "error_rate": self.error_rate.to_dict() if self.error_rate is not None else None
        }
        present = {c.name for c in self.latency}
        for check in DEFAULT_LATENCY:
            if check.name not in present:
                metrics[check.name] = None
        for check in self.latency:
            metrics[check.name] = check.to_dict()
        return {
            "interval": format_duration(self.interval),
            "min_requests": self.min_requests,
            "failure_limit": self.failure_limit,
            "max_inconclusive": self.max_inconclusive,
            "inconclusive": str(self.inconclusive),
            "power": self.power,
            "max_wait": format_duration(self.max_wait),
            "idle": str(self.idle),
            "metrics": metrics,
            "custom": [c.to_dict() for c in self.custom],
        }


def _fields(item: object, where: str, allowed: Sequence[str]) -> Mapping[str, Any]:
    if not isinstance(item, Mapping):
        raise InvalidInput(
            f"{where} must be an object with {' and/or '.join(allowed)}, or null to turn it off"
        )
    unknown = sorted(set(item) - set(allowed))
    if unknown:
        raise InvalidInput(
            f"{where}: unknown field(s) {', '.join(map(str, unknown))}; use {', '.join(allowed)}"
        )
    return item


def _parse_metrics(spec: object) -> dict[str, Any]:
    if not isinstance(spec, Mapping):
        raise InvalidInput(
            'metrics must be an object like {"error_rate": {"max_increase_pp": 1},'
            ' "latency_p99": {"max_increase_pct": 20}}'
        )
    out: dict[str, Any] = {}
    latency = {c.name: c for c in DEFAULT_LATENCY}
    for name, item in spec.items():
        if name == "error_rate":
            if item is None or item is False:
                out["error_rate"] = None
            else:
                given = _fields(item, "metrics.error_rate", ("max_increase_pp", "confidence"))
                out["error_rate"] = ErrorRateCheck(**given)
            continue
        m = _LATENCY_NAME.fullmatch(name) if isinstance(name, str) else None
        if m is None:
            raise InvalidInput(
                f"unknown metric {name!r}: use error_rate or latency_pNN (latency_p50,"
                " latency_p95, latency_p99, latency_p999); put your own metrics under 'custom'"
            )
        digits = m.group(1)
        quantile = int(digits) / 10 ** len(digits)
        if item is None or item is False:
            latency.pop(name, None)
            continue
        given = _fields(item, f"metrics.{name}", ("max_increase_pct", "confidence"))
        check = LatencyCheck(quantile, **given)
        if check.name != name:
            raise InvalidInput(
                f"write metric {name!r} as {check.name!r} (quantile {quantile:g}): the digits"
                " are the quantile's decimals, latency_p999 is 0.999"
            )
        latency[name] = check
    out["latency"] = tuple(latency.values())
    return out


def _parse_custom(spec: object) -> tuple[CustomCheck, ...]:
    if isinstance(spec, str | bytes) or not isinstance(spec, Sequence):
        raise InvalidInput(
            'custom must be a list like [{"name": "queue_lag_ms", "max_increase_pct": 10}]'
        )
    out = []
    for i, item in enumerate(spec, start=1):
        given = _fields(item, f"custom[{i}]", ("name", "max_increase_pct", "max_increase"))
        if "name" not in given:
            raise InvalidInput(f"custom[{i}] needs a name")
        out.append(CustomCheck(**given))
    return tuple(out)


def judged(stored: Mapping[str, Any]) -> bool:
    """Whether a stored release is analysed (its steps then wait for the judge's evidence):
    not when its ``analysis`` object is empty (stored before the judge was on by default)
    or says ``enabled: false``."""
    return bool(stored) and stored.get("enabled", True) is not False
