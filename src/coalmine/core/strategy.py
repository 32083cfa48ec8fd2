"""Strategies: the steps of a release (exposure, and how long to hold it).

Every AWS CodeDeploy Lambda preset is known by its exact name (with or without
the ``CodeDeployDefault.Lambda`` prefix), as are the custom shapes CodeDeploy
calls TimeBasedCanary and TimeBasedLinear (``Canary5Percent20Minutes``,
``Linear25PercentEvery2Minutes``). Any other plan is a custom step list,
written ``"5%:2m, 25%:5m, 100%"`` or as a list of ``{"percent"|"exposure",
"hold"}`` objects. Exposure is kept in basis points (1% = 100).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from coalmine.core.bucketing import BUCKETS
from coalmine.core.errors import InvalidInput

__all__ = [
    "MAX_HOLD_SECONDS",
    "MAX_STEPS",
    "PRESETS",
    "ScheduledStep",
    "Step",
    "Strategy",
    "StrategyError",
    "format_duration",
    "parse_duration",
    "parse_percent",
    "parse_strategy",
]

MAX_STEPS = 100
MAX_HOLD_SECONDS = 30 * 24 * 3600
_CODEDEPLOY_PREFIX = "CodeDeployDefault.Lambda"
_CANARY = re.compile(r"Canary(\d{1,2})Percent(\d{1,4})Minutes?")
_LINEAR = re.compile(r"Linear(\d{1,2})PercentEvery(\d{1,4})Minutes?")
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


class StrategyError(InvalidInput):
    """A strategy that cannot be used; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class Step:
    exposure: int
    """basis points, 1..10000"""
    hold: float
    """seconds to hold this exposure before the next step"""


@dataclass(frozen=True, slots=True)
class ScheduledStep:
    index: int
    exposure: int
    starts_at: float
    """seconds after the release starts taking traffic"""
    ends_at: float


@dataclass(frozen=True, slots=True)
class Strategy:
    name: str
    steps: tuple[Step, ...]

    def __post_init__(self) -> None:
        _validate_steps(self.steps)

    @property
    def total_duration(self) -> float:
        return sum(step.hold for step in self.steps)

    def schedule(self) -> tuple[ScheduledStep, ...]:
        """Each step with its start and end, as offsets from the first step."""
        out: list[ScheduledStep] = []
        t = 0.0
        for i, step in enumerate(self.steps):
            out.append(ScheduledStep(i, step.exposure, t, t + step.hold))
            t += step.hold
        return tuple(out)

    def exposure_at(self, elapsed: float) -> int:
        """The exposure ``elapsed`` seconds after the first step, on schedule."""
        if elapsed < 0:
            return 0
        for item in self.schedule():
            if elapsed < item.ends_at:
                return item.exposure
        return self.steps[-1].exposure

    def describe(self) -> str:
        """A compact form that `parse_strategy` reads back to the same steps."""
        parts = []
        for step in self.steps:
            pct = _format_percent(step.exposure)
            parts.append(f"{pct}:{format_duration(step.hold)}" if step.hold else pct)
        return ", ".join(parts)

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "steps": [{"exposure": s.exposure, "hold": s.hold} for s in self.steps],
        }


def _validate_steps(steps: Sequence[Step]) -> None:
    if not steps:
        raise StrategyError("a strategy needs at least one step")
    if len(steps) > MAX_STEPS:
        raise StrategyError(f"a strategy has at most {MAX_STEPS} steps, got {len(steps)}")
    previous = 0
    for i, step in enumerate(steps, start=1):
        e = step.exposure
        if isinstance(e, bool) or not isinstance(e, int) or not 1 <= e <= BUCKETS:
            raise StrategyError(
                f"step {i}: exposure {_describe_bp(e)} is out of range;"
                " use 0.01% to 100% (1 to 10000 basis points)"
            )
        if e <= previous:
            raise StrategyError(
                f"step {i}: exposure {_format_percent(e)} must be above the previous step's"
                f" {_format_percent(previous)}; exposure only grows during a release"
            )
        h = step.hold
        if isinstance(h, bool) or not isinstance(h, int | float) or not math.isfinite(h) or h < 0:
            raise StrategyError(f"step {i}: hold {h!r} must be a finite number of seconds >= 0")
        if h > MAX_HOLD_SECONDS:
            raise StrategyError(f"step {i}: hold {format_duration(h)} is longer than 30 days")
        previous = e
    if steps[-1].exposure != BUCKETS:
        raise StrategyError(
            f"the last step is at {_format_percent(steps[-1].exposure)}; a strategy must end at 100%"
            " (add a final '100%' step)"
        )


def _canary(percent: int, minutes: int) -> tuple[Step, ...]:
    return (Step(percent * 100, minutes * 60.0), Step(BUCKETS, 0.0))


def _linear(percent: int, minutes: int) -> tuple[Step, ...]:
    exposures = [*range(percent * 100, BUCKETS, percent * 100), BUCKETS]
    return tuple(Step(e, minutes * 60.0 if e < BUCKETS else 0.0) for e in exposures)


PRESETS: Mapping[str, tuple[Step, ...]] = {
    "Canary10Percent5Minutes": _canary(10, 5),
    "Canary10Percent10Minutes": _canary(10, 10),
    "Canary10Percent15Minutes": _canary(10, 15),
    "Canary10Percent30Minutes": _canary(10, 30),
    "Linear10PercentEvery1Minute": _linear(10, 1),
    "Linear10PercentEvery2Minutes": _linear(10, 2),
    "Linear10PercentEvery3Minutes": _linear(10, 3),
    "Linear10PercentEvery10Minutes": _linear(10, 10),
    "AllAtOnce": (Step(BUCKETS, 0.0),),
}
"""AWS CodeDeploy's predefined Lambda deployment configurations, by their SAM names."""


def parse_duration(value: object) -> float:
    """Seconds from ``90``, ``"90"``, ``"30s"``, ``"5m"``, ``"1h30m"``, ``"1.5h"``."""
    if isinstance(value, bool):
        raise StrategyError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond any float
            seconds = math.inf
    elif isinstance(value, str):
        text = value.strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            m = _DURATION.fullmatch(text)
            if not text or m is None or not any(m.groups()):
                raise StrategyError(
                    f"invalid duration {value!r}: use seconds or a form like 30s, 5m, 1h30m"
                ) from None
            h, mi, s = (float(g) if g else 0.0 for g in m.groups())
            seconds = h * 3600 + mi * 60 + s
    else:
        raise StrategyError(f"invalid duration {value!r}: use seconds or a form like 5m")
    if not math.isfinite(seconds) or seconds < 0:
        raise StrategyError(f"invalid duration {value!r}: must be a finite number >= 0")
    return seconds


def format_duration(seconds: float) -> str:
    if seconds == int(seconds):
        whole = int(seconds)
        if whole and whole % 3600 == 0:
            return f"{whole // 3600}h"
        if whole and whole % 60 == 0:
            return f"{whole // 60}m"
        return f"{whole}s"
    # The shortest exact form, written without an exponent so that
    # parse_duration (and so parse_strategy(describe())) reads it back.
    text = repr(float(seconds))
    if "e" in text:
        text = format(Decimal(text), "f")
    return f"{text}s"


def parse_percent(value: object) -> int:
    """Basis points from ``"12.5%"``, ``"12.5"`` (percent), or a number of percent."""
    if isinstance(value, bool):
        raise StrategyError(f"invalid percentage {value!r}")
    text = value.strip().rstrip("%").strip() if isinstance(value, str) else value
    try:
        pct = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise StrategyError(f"invalid percentage {value!r}: use a form like 10% or 2.5%") from None
    bp = pct * 100
    if not math.isfinite(bp) or abs(bp - round(bp)) > 1e-6:
        raise StrategyError(f"invalid percentage {value!r}: at most two decimals (0.01% steps)")
    return round(bp)


def _describe_bp(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{_format_percent(value)} ({value} bp)"
    return repr(value)


def _format_percent(bp: int) -> str:
    return f"{bp / 100:g}%"


def _step_from_mapping(item: Mapping[str, object], i: int) -> Step:
    unknown = set(item) - {"percent", "exposure", "hold"}
    if unknown:
        raise StrategyError(
            f"step {i}: unknown field(s) {', '.join(sorted(unknown))}; use percent or exposure, and hold"
        )
    if ("percent" in item) == ("exposure" in item):
        raise StrategyError(
            f"step {i}: give exactly one of percent (e.g. 10) or exposure (basis points)"
        )
    if "percent" in item:
        exposure = parse_percent(item["percent"])
    else:
        raw = item["exposure"]
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise StrategyError(f"step {i}: exposure {raw!r} must be whole basis points (1% = 100)")
        exposure = raw
    return Step(exposure, parse_duration(item.get("hold", 0)))


def _step_from_text(text: str, i: int) -> Step:
    pct, sep, hold = text.partition(":")
    if not pct.strip():
        raise StrategyError(f"step {i}: missing percentage in {text!r}; write e.g. 10%:5m")
    return Step(parse_percent(pct), parse_duration(hold) if sep else 0.0)


def _from_steps(name: str, steps: Iterable[Step]) -> Strategy:
    return Strategy(name, tuple(steps))


def parse_strategy(spec: object) -> Strategy:
    """Read a strategy from a preset name, a compact step string, or a list of steps."""
    if isinstance(spec, Strategy):
        return spec
    if isinstance(spec, str):
        text = spec.strip()
        name = text.removeprefix(_CODEDEPLOY_PREFIX)
        if name in PRESETS:
            return Strategy(name, PRESETS[name])
        if m := _CANARY.fullmatch(name):
            pct, minutes = int(m.group(1)), int(m.group(2))
            if not 1 <= pct <= 99:
                raise StrategyError(f"{text}: a canary percentage must be 1 to 99")
            return Strategy(name, _canary(pct, minutes))
        if m := _LINEAR.fullmatch(name):
            pct, minutes = int(m.group(1)), int(m.group(2))
            if not 1 <= pct <= 50:
                raise StrategyError(f"{text}: a linear percentage must be 1 to 50")
            return Strategy(name, _linear(pct, minutes))
        if "%" in text or ":" in text or re.fullmatch(r"[\d.\s,]+", text or "x"):
            steps = [_step_from_text(part, i) for i, part in enumerate(text.split(","), start=1)]
            return _from_steps("custom", steps)
        known = ", ".join(PRESETS)
        raise StrategyError(
            f"unknown strategy {text!r}: use a preset ({known}), CanaryNPercentMMinutes,"
            " LinearNPercentEveryMMinutes, or steps like '10%:5m, 50%:10m, 100%'"
        )
    if isinstance(spec, Mapping):
        if "steps" in spec:
            strategy = parse_strategy(spec["steps"])
            name = spec.get("name", "custom")
            if not isinstance(name, str) or not name:
                raise StrategyError("a strategy's name must be a non-empty string")
            return Strategy(name, strategy.steps)
        if "name" in spec and len(spec) == 1:
            return parse_strategy(spec["name"])
        raise StrategyError("a strategy object needs 'steps' (and optionally 'name')")
    if isinstance(spec, Sequence):
        items: list[Step] = []
        for i, item in enumerate(spec, start=1):
            if isinstance(item, Step):
                items.append(item)
            elif isinstance(item, Mapping):
                items.append(_step_from_mapping(item, i))
            elif isinstance(item, str):
                items.append(_step_from_text(item, i))
            else:
                raise StrategyError(
                    f"step {i}: {item!r} is not a step; use {{'percent': 10, 'hold': '5m'}} or '10%:5m'"
                )
        return _from_steps("custom", items)
    raise StrategyError(
        f"invalid strategy {spec!r}: give a preset name, a step string, or a list of steps"
    )
