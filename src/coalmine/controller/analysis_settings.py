"""A release's ``analysis`` settings, read once: the judge's settings, the alarm sources,
and where the judge's metrics come from.

Read when a release is created or an app's defaults are set (bad settings
are a 400 then) and once per release by the analysis step, never per tick.

Besides `AnalysisSettings`' fields and ``alarms``, the object may say where
the metrics come from: ``metrics: cloudwatch`` (or ``metrics: {source:
cloudwatch, ...checks}``) reads coalmine's per-version EMF metrics from
CloudWatch (`coalmine.integrations.cloudwatch_metrics`); ``control-plane``,
the default, the histograms SDKs and gateways send to the control plane.
``namespace`` is the CloudWatch namespace of those EMF metrics (``coalmine``
by default), also used to attribute CloudWatch alarms on them.

The judge is on by default: a release that gives no settings (and whose app
gives none) is stored with `DEFAULT_ANALYSIS`, the defaults of
`AnalysisSettings` with ``idle: clock`` (while no changed function serves a
call the steps go by the strategy, so a release whose versions report no
metrics runs as a time-based one). ``{"enabled": false}`` turns analysis off
(`stored_analysis`); an empty stored object is a release stored before the
judge was on by default, and is not analysed (`judged`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx

from coalmine.core.analysis import AnalysisSettings, judged
from coalmine.core.attribution import DEFAULT_NAMESPACE, ReleaseScope
from coalmine.core.errors import InvalidInput
from coalmine.core.ports import AlarmSource, MetricsProvider
from coalmine.integrations.cloudwatch import CloudWatchAlarm, CloudWatchAlarmReader
from coalmine.integrations.cloudwatch_metrics import CloudWatchMetrics
from coalmine.integrations.prometheus import PrometheusAlarm

__all__ = [
    "DEFAULT_ANALYSIS",
    "MetricsSource",
    "ReleaseAnalysis",
    "judged",
    "parse_alarms",
    "release_analysis",
    "stored_analysis",
]

DEFAULT_ANALYSIS: Mapping[str, Any] = {"idle": "clock"}
"""What a release that gives no ``analysis`` is judged with: every default, and the steps go
by the strategy while no changed function has served a call."""

_NAMESPACE = re.compile(r"[0-9A-Za-z._/#: -]{1,255}")  # CloudWatch's namespace characters


class MetricsSource(StrEnum):
    """Where the judge's per-version metrics come from."""

    CONTROL_PLANE = "control-plane"
    """the histograms SDKs and gateways send to the control plane (the default)"""
    CLOUDWATCH = "cloudwatch"
    """the per-version EMF metrics in CloudWatch: counts and percentiles, no histograms"""


@dataclass(frozen=True, slots=True)
class ReleaseAnalysis:
    """A release's ``analysis`` object, read: the judge's settings, the alarms, and the
    metrics source."""

    settings: AnalysisSettings
    alarms: tuple[AlarmSource, ...] = ()
    source: MetricsSource = MetricsSource.CONTROL_PLANE
    namespace: str = DEFAULT_NAMESPACE
    metrics: MetricsProvider | None = None
    """the release's own metrics provider (CloudWatch); None: the analysis step's default"""


def release_analysis(
    spec: Mapping[str, Any] | None,
    *,
    transport: httpx.BaseTransport | None = None,
    scope: Callable[[str], ReleaseScope] | None = None,
) -> ReleaseAnalysis | None:
    """Read a release's stored ``analysis`` object; None when analysis is off (``enabled:
    false``, or an empty object stored before the judge was on by default).

    Every field of `AnalysisSettings.parse`, plus ``alarms`` (see
    `parse_alarms`), ``metrics`` naming the source and ``namespace`` (see the
    module docstring). ``scope`` makes the release's `ReleaseScope` for an EMF
    namespace: CloudWatch alarms blame by it (asked only when one is listed).
    Raises `InvalidInput` naming the problem.
    """
    if spec is None or (isinstance(spec, Mapping) and not spec):
        return None
    if not isinstance(spec, Mapping):
        raise InvalidInput(
            'analysis must be an object like {"interval": "1m", ...}, or {"enabled": false}'
        )
    if not _enabled(spec):
        return None
    spec = {k: v for k, v in spec.items() if k != "enabled"}
    rest = {k: v for k, v in spec.items() if k not in ("alarms", "namespace")}
    try:
        source, rest = _source(rest)
        namespace = _namespace(spec.get("namespace", DEFAULT_NAMESPACE))
        settings = AnalysisSettings.parse(rest)
        listed = spec.get("alarms")
        wanted = scope is not None and _lists_cloudwatch(listed)
        alarms = parse_alarms(
            listed, transport=transport, scope=scope(namespace) if scope and wanted else None
        )
    except InvalidInput as exc:
        raise InvalidInput(f"analysis: {exc}") from None
    metrics: MetricsProvider | None = None
    if source is MetricsSource.CLOUDWATCH:
        quantiles = [check.quantile for check in settings.latency]
        metrics = CloudWatchMetrics(namespace, quantiles=quantiles)
    return ReleaseAnalysis(settings, alarms, source, namespace, metrics)


def _enabled(spec: Mapping[str, Any]) -> bool:
    """Whether ``spec`` turns analysis on: ``enabled`` is true or absent."""
    enabled = spec.get("enabled", True)
    if not isinstance(enabled, bool):
        raise InvalidInput(
            f"analysis: enabled {enabled!r} must be true or false (false turns analysis off)"
        )
    if not enabled and len(spec) > 1:
        others = ", ".join(sorted(str(k) for k in spec if k != "enabled"))
        raise InvalidInput(
            f"analysis: enabled is false but {others} given: remove them, or set enabled: true"
        )
    return enabled


def stored_analysis(spec: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a new release stores as its ``analysis``: `DEFAULT_ANALYSIS` when ``spec`` is
    empty or None (the judge is on by default), else ``spec`` itself once it parses.
    Raises `InvalidInput` naming the problem."""
    if not spec:
        return dict(DEFAULT_ANALYSIS)
    release_analysis(spec)
    return dict(spec)


def _source(spec: dict[str, Any]) -> tuple[MetricsSource, dict[str, Any]]:
    """The metrics source, and the settings without it."""
    metrics = spec.get("metrics")
    if isinstance(metrics, str):
        value: object = metrics
        spec = {k: v for k, v in spec.items() if k != "metrics"}
    elif isinstance(metrics, Mapping) and "source" in metrics:
        value = metrics["source"]
        spec = {**spec, "metrics": {k: v for k, v in metrics.items() if k != "source"}}
    else:
        return MetricsSource.CONTROL_PLANE, spec
    if isinstance(value, str) and value in set(MetricsSource):
        return MetricsSource(value), spec
    raise InvalidInput(
        f"metrics {value!r} is not a metrics source: use 'cloudwatch' (the per-version EMF"
        " metrics in CloudWatch) or 'control-plane' (the default: histograms sent to the"
        ' control plane); checks go in an object, e.g. {"source": "cloudwatch",'
        ' "latency_p99": {"max_increase_pct": 20}}'
    )


def _namespace(value: object) -> str:
    if not isinstance(value, str) or not _NAMESPACE.fullmatch(value) or value != value.strip():
        raise InvalidInput(
            f"namespace {value!r} must be a CloudWatch namespace: 1-255 letters, digits, spaces"
            " or . - _ / # : (coalmine's EMF metrics use 'coalmine' unless"
            " COALMINE_EMF_NAMESPACE says otherwise)"
        )
    return value


def _lists_cloudwatch(spec: object) -> bool:
    return isinstance(spec, Sequence) and any(
        isinstance(item, Mapping) and "cloudwatch" in item for item in spec
    )


def parse_alarms(
    spec: object,
    *,
    transport: httpx.BaseTransport | None = None,
    scope: ReleaseScope | None = None,
) -> tuple[AlarmSource, ...]:
    """The alarm sources of a release's ``analysis.alarms`` list (none when absent).

    Each item names its kind by its fields: ``prometheus`` (the server's URL)
    with ``query`` is a `PrometheusAlarm`; ``cloudwatch`` (a CloudWatch
    alarm's name or ARN) a `CloudWatchAlarm`, blaming by ``scope`` (the
    release), and read with the release's other CloudWatch alarms in one
    call. Anything else raises `InvalidInput` (an unknown kind is never
    guessed).
    """
    if spec is None:
        return ()
    if isinstance(spec, str | bytes) or not isinstance(spec, Sequence):
        raise InvalidInput(
            'alarms must be a list like [{"name": "p99", "prometheus": "http://127.0.0.1:9090",'
            ' "query": "...", "above": 0.5}]'
        )
    out: list[AlarmSource] = []
    readers: dict[str | None, CloudWatchAlarmReader] = {}
    for i, item in enumerate(spec, start=1):
        if not isinstance(item, Mapping):
            raise InvalidInput(f"alarms[{i}] must be an object")
        if "prometheus" not in item and "cloudwatch" not in item:
            raise InvalidInput(
                f"alarms[{i}]: unknown kind of alarm: give prometheus (the server's URL) and"
                " query, or cloudwatch (a CloudWatch alarm's name); other alarms are raised"
                " over HTTP (POST /v1/alarms)"
            )
        try:
            if "prometheus" in item:
                out.append(PrometheusAlarm.from_spec(item, transport=transport))
            else:
                out.append(CloudWatchAlarm.from_spec(item, readers=readers, scope=scope))
        except InvalidInput as exc:
            raise InvalidInput(f"alarms[{i}]: {exc}") from None
    names = [a.name for a in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidInput(f"alarm name(s) used twice: {', '.join(dupes)}")
    return tuple(out)
