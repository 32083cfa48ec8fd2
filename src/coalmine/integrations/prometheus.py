"""Prometheus alarms: a PromQL query the analysis evaluates every interval.

A release's analysis settings may list them (``"alarms": [{"name",
"prometheus", "query", "above"}]``, see
``coalmine.controller.analysis_settings``). `PrometheusAlarm` implements the
`coalmine.core.ports.AlarmSource` port with ``GET /api/v1/query``.

The query runs on the controller's tick, so it has ``timeout`` seconds in
all (reading the answer included), reads at most `ANSWER_LIMIT` bytes and
connects only where the outbound policy allows
(`coalmine.integrations.outbound`). What the server says is not repeated in
the evaluation's detail beyond the sample the alarm judged: a URL pointed
at some other service must not turn alarms into a way of reading it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from coalmine.core.alarms import AlarmEvaluation, EvaluationState, validate_alarm_name
from coalmine.core.errors import InvalidInput
from coalmine.integrations.outbound import deadline as outbound_deadline
from coalmine.integrations.outbound import guarded_transport, read_capped

__all__ = ["ANSWER_LIMIT", "PROMETHEUS_FIELDS", "PrometheusAlarm"]

ANSWER_LIMIT = 1024 * 1024
"""bytes of a query's answer read at most; a longer one is an error"""
_MAX_LABELS = 200

_MAX_QUERY = 10_000
PROMETHEUS_FIELDS = ("name", "prometheus", "query", "above", "below", "timeout")


def _threshold(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _labels(metric: object) -> str:
    if not isinstance(metric, Mapping) or not metric:
        return ""
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()))
    labels = "{" + inner + "}"
    return labels if len(labels) <= _MAX_LABELS else labels[: _MAX_LABELS - 4] + "...}"


@dataclass(frozen=True, slots=True)
class PrometheusAlarm:
    """Fires when the PromQL ``query`` has a sample above ``above`` (or below ``below``).

    Evaluated with ``GET {prometheus}/api/v1/query``. An instant vector fires
    when any of its samples crosses the threshold, a scalar when it does; no
    samples is OK. An error answer, an unreachable server or a result of
    another type is an ``error`` evaluation (reported, never a rollback).
    """

    name: str
    url: str
    query: str
    above: float | None = None
    below: float | None = None
    timeout: float = 5.0
    transport: httpx.BaseTransport | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        validate_alarm_name(self.name)
        if not isinstance(self.url, str) or not re.fullmatch(r"https?://[^\s/]+(/\S*)?", self.url):
            raise InvalidInput(
                f"alarm {self.name}: prometheus must be the server's URL, like"
                f" http://127.0.0.1:9090, got {self.url!r}"
            )
        object.__setattr__(self, "url", self.url.rstrip("/"))
        if not isinstance(self.query, str) or not self.query.strip():
            raise InvalidInput(f"alarm {self.name}: query must be a PromQL expression")
        if len(self.query) > _MAX_QUERY:
            raise InvalidInput(f"alarm {self.name}: query is longer than {_MAX_QUERY} characters")
        if (self.above is None) == (self.below is None):
            raise InvalidInput(
                f"alarm {self.name}: give exactly one of above or below (the threshold that fires)"
            )
        for what in ("above", "below"):
            value = getattr(self, what)
            if value is not None:
                object.__setattr__(self, what, _threshold(value, f"alarm {self.name}: {what}"))
        timeout = _threshold(self.timeout, f"alarm {self.name}: timeout")
        if not 0 < timeout <= 60:
            raise InvalidInput(f"alarm {self.name}: timeout must be above 0 and at most 60 seconds")
        object.__setattr__(self, "timeout", timeout)

    @classmethod
    def from_spec(
        cls, spec: Mapping[str, Any], *, transport: httpx.BaseTransport | None = None
    ) -> PrometheusAlarm:
        unknown = sorted(str(k) for k in spec if k not in PROMETHEUS_FIELDS)
        if unknown:
            raise InvalidInput(
                f"unknown field(s) {', '.join(unknown)}; a Prometheus alarm has"
                f" {', '.join(PROMETHEUS_FIELDS)}"
            )
        missing = [k for k in ("name", "prometheus", "query") if k not in spec]
        if missing:
            raise InvalidInput(
                f"missing {', '.join(missing)}: a Prometheus alarm is"
                ' {"name": "p99", "prometheus": "http://127.0.0.1:9090", "query": "...",'
                ' "above": 0.5}'
            )
        return cls(
            name=spec["name"],
            url=spec["prometheus"],
            query=spec["query"],
            above=spec.get("above"),
            below=spec.get("below"),
            timeout=spec.get("timeout", 5.0),
            transport=transport,
        )

    @property
    def condition(self) -> str:
        return f"> {self.above:g}" if self.above is not None else f"< {self.below:g}"

    def crosses(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return value > self.above if self.above is not None else value < (self.below or 0.0)

    def evaluate(self, *, at: float | None = None) -> AlarmEvaluation:
        params = {"query": self.query}
        if at is not None:
            params["time"] = f"{at:.3f}"
        where = f"Prometheus at {self.url}"
        transport = self.transport if self.transport is not None else guarded_transport()
        try:
            with (
                outbound_deadline(self.timeout) as deadline,
                httpx.Client(timeout=self.timeout, transport=transport) as http,
                http.stream("GET", f"{self.url}/api/v1/query", params=params) as r,
            ):
                raw = read_capped(r, ANSWER_LIMIT + 1, deadline)
                status = r.status_code
        except httpx.TimeoutException:
            raw = None
        except httpx.HTTPError as exc:
            return self._error(f"cannot query {where}: {exc or type(exc).__name__}")
        if raw is None:
            return self._error(f"{where} did not answer within {self.timeout:g}s")
        if len(raw) > ANSWER_LIMIT:
            return self._error(f"{where} answered {status} with more than {ANSWER_LIMIT} bytes")
        try:
            answer = json.loads(raw)
        except ValueError:
            return self._error(f"{where} answered {status} with a body that is not JSON")
        if not isinstance(answer, Mapping):
            return self._error(f"{where} answered {status} with an unexpected body")
        if answer.get("status") != "success":
            kind = answer.get("errorType")
            said = f" ({kind})" if isinstance(kind, str) and re.fullmatch(r"\w{1,40}", kind) else ""
            return self._error(f"{where} rejected {self.query!r}: answered {status}{said}")
        try:
            samples = _samples(answer.get("data"))
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            return self._error(f"{where}: {self.query!r} gave {exc}")
        return self._judge(samples)

    def _error(self, detail: str) -> AlarmEvaluation:
        return AlarmEvaluation(self.name, EvaluationState.ERROR, detail)

    def _judge(self, samples: Sequence[tuple[str, float]]) -> AlarmEvaluation:
        if not samples:
            return AlarmEvaluation(
                self.name, EvaluationState.OK, f"{self.query} returned no samples"
            )
        crossing = [(labels, v) for labels, v in samples if self.crosses(v)]
        pick = max if self.above is not None else min
        if crossing:
            labels, value = pick(crossing, key=lambda s: s[1])
            of = f" ({len(crossing)} of {len(samples)} series)" if len(samples) > 1 else ""
            detail = f"{self.query} = {value:g}{labels} {self.condition}{of}"
            return AlarmEvaluation(self.name, EvaluationState.FIRING, detail, value)
        finite = [s for s in samples if not math.isnan(s[1])] or list(samples)
        labels, value = pick(finite, key=lambda s: s[1])
        detail = f"{self.query} = {value:g}{labels}, fires {self.condition}"
        return AlarmEvaluation(self.name, EvaluationState.OK, detail, value)


def _samples(data: object) -> list[tuple[str, float]]:
    if not isinstance(data, Mapping):
        raise ValueError("no data in the answer")
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        assert isinstance(result, list)
        return [("", float(result[1]))]
    if kind == "vector":
        if not isinstance(result, list):
            raise ValueError("a vector result that is not a list")
        return [(_labels(item.get("metric")), float(item["value"][1])) for item in result]
    raise ValueError(f"a {kind} result; use a query that gives an instant vector or a scalar")
