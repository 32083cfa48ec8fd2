"""A release's ``analysis`` settings, read once: the judge's settings and the alarm sources.

Read when a release is created or an app's defaults are set (bad settings
are a 400 then) and once per release by the analysis step, never per tick.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from coalmine.core.analysis import AnalysisSettings
from coalmine.core.errors import InvalidInput
from coalmine.core.ports import AlarmSource
from coalmine.integrations.prometheus import PrometheusAlarm

__all__ = ["ReleaseAnalysis", "parse_alarms", "release_analysis"]


@dataclass(frozen=True, slots=True)
class ReleaseAnalysis:
    """A release's ``analysis`` object, read: the judge's settings and the alarms."""

    settings: AnalysisSettings
    alarms: tuple[AlarmSource, ...] = ()


def release_analysis(
    spec: Mapping[str, Any] | None, *, transport: httpx.BaseTransport | None = None
) -> ReleaseAnalysis | None:
    """Read a release's ``analysis`` object; None when it is empty (no analysis).

    Every field of `AnalysisSettings.parse`, plus ``alarms`` (a list of
    Prometheus alarms, see `coalmine.controller.alarms.parse_alarms`).
    Raises `InvalidInput` naming the problem.
    """
    if spec is None or (isinstance(spec, Mapping) and not spec):
        return None
    if not isinstance(spec, Mapping):
        raise InvalidInput('analysis must be an object like {"interval": "1m", ...}')
    rest = {k: v for k, v in spec.items() if k != "alarms"}
    try:
        settings = AnalysisSettings.parse(rest)
        alarms = parse_alarms(spec.get("alarms"), transport=transport)
    except InvalidInput as exc:
        raise InvalidInput(f"analysis: {exc}") from None
    return ReleaseAnalysis(settings, alarms)


def parse_alarms(
    spec: object, *, transport: httpx.BaseTransport | None = None
) -> tuple[AlarmSource, ...]:
    """The alarm sources of a release's ``analysis.alarms`` list (none when absent).

    Each item names its kind by its fields: ``prometheus`` (the server's URL)
    with ``query`` is a `PrometheusAlarm`. Anything else raises `InvalidInput`
    (an unknown kind is never guessed).
    """
    if spec is None:
        return ()
    if isinstance(spec, str | bytes) or not isinstance(spec, Sequence):
        raise InvalidInput(
            'alarms must be a list like [{"name": "p99", "prometheus": "http://127.0.0.1:9090",'
            ' "query": "...", "above": 0.5}]'
        )
    out: list[AlarmSource] = []
    for i, item in enumerate(spec, start=1):
        if not isinstance(item, Mapping):
            raise InvalidInput(f"alarms[{i}] must be an object")
        if "prometheus" not in item:
            raise InvalidInput(
                f"alarms[{i}]: unknown kind of alarm: give prometheus (the server's URL) and"
                " query; other alarms are raised over HTTP (POST /v1/alarms)"
            )
        try:
            out.append(PrometheusAlarm.from_spec(item, transport=transport))
        except InvalidInput as exc:
            raise InvalidInput(f"alarms[{i}]: {exc}") from None
    names = [a.name for a in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidInput(f"alarm name(s) used twice: {', '.join(dupes)}")
    return tuple(out)
