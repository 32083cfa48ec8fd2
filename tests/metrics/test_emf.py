"""CloudWatch EMF lines: every document passes a validator written from the published
specification, and the lines add up to exactly what was recorded (properties)."""

from __future__ import annotations

import io
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalmine.core.errors import InvalidInput
from coalmine.metrics.emf import (
    DIMENSIONS,
    MAX_VALUES,
    EmfWriter,
    emf_documents,
    emf_enabled,
    emf_namespace,
)

# The standard units of a MetricDefinition (CloudWatch's StandardUnit).
UNITS = {
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
    "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
    "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second",
    "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second", "Gigabits/Second",
    "Terabits/Second", "Count/Second", "None",
}  # fmt: skip


def validate_emf(doc: Any) -> None:
    """Raise AssertionError unless ``doc`` is an EMF document per the specification."""
    assert isinstance(doc, dict), "the root node is an object"
    meta = doc.get("_aws")
    assert isinstance(meta, dict), "_aws is a required object"
    assert set(meta) <= {"Timestamp", "CloudWatchMetrics", "LogGroupName"}
    ts = meta.get("Timestamp")
    assert isinstance(ts, int), "Timestamp: a number of milliseconds"
    assert not isinstance(ts, bool)
    assert ts >= 0
    directives = meta.get("CloudWatchMetrics")
    assert isinstance(directives, list), "CloudWatchMetrics is a required array"
    for d in directives:
        assert isinstance(d, dict)
        assert set(d) == {"Namespace", "Dimensions", "Metrics"}
        ns = d["Namespace"]
        assert isinstance(ns, str)
        assert 1 <= len(ns) <= 1024
        assert isinstance(d["Dimensions"], list)
        for dimension_set in d["Dimensions"]:
            assert isinstance(dimension_set, list)
            assert 1 <= len(dimension_set) <= 30
            for name in dimension_set:
                assert isinstance(name, str)
                assert 1 <= len(name) <= 250
                value = doc.get(name)
                assert isinstance(value, str), f"dimension {name} must be a string member"
                assert 1 <= len(value) <= 1024
        metrics = d["Metrics"]
        assert isinstance(metrics, list)
        assert 1 <= len(metrics) <= 100
        names = [m["Name"] for m in metrics]
        assert len(names) == len(set(names))
        for m in metrics:
            assert set(m) <= {"Name", "Unit", "StorageResolution"}
            assert isinstance(m["Name"], str)
            assert 1 <= len(m["Name"]) <= 1024
            assert m.get("Unit", "None") in UNITS
            value = doc.get(m["Name"])
            values = value if isinstance(value, list) else [value]
            assert 1 <= len(values) <= 100, "at most 100 values per metric"
            for v in values:
                assert isinstance(v, int | float)
                assert not isinstance(v, bool)
                assert math.isfinite(v)


KEY = ("shop", "place-order", "v2", "canary")


def test_one_call_is_one_document_with_the_four_dimensions() -> None:
    (doc,) = emf_documents(KEY, requests=1, errors=1, latencies=[12.3456], timestamp_ms=1_700_000)
    validate_emf(doc)
    assert doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [list(DIMENSIONS)]
    assert doc["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "coalmine"
    assert {m["Name"]: m["Unit"] for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]} == {
        "requests": "Count",
        "errors": "Count",
        "latency": "Milliseconds",
    }
    assert (doc["app"], doc["function"], doc["version"], doc["channel"]) == KEY
    assert (doc["requests"], doc["errors"], doc["latency"]) == (1, 1, 12.346)


def test_bad_counts_and_latencies_are_refused() -> None:
    for kwargs, match in (
        ({"requests": 1, "errors": 2}, "errors in"),
        ({"requests": -1, "errors": 0}, "requests"),
        ({"requests": 1, "errors": 0, "latencies": [float("nan")]}, "finite"),
        ({"requests": 1, "errors": 0, "latencies": [-1.0]}, ">= 0"),
    ):
        with pytest.raises(InvalidInput, match=match):
            emf_documents(KEY, timestamp_ms=0, **kwargs)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    requests=st.integers(0, 10_000),
    data=st.data(),
    latencies=st.lists(st.floats(0, 1e6, allow_nan=False), max_size=450),
    ts=st.integers(0, 2**45),
)
def test_documents_keep_the_limits_and_add_up(
    requests: int, data: st.DataObject, latencies: list[float], ts: int
) -> None:
    errors = data.draw(st.integers(0, requests))
    docs = emf_documents(
        KEY, requests=requests, errors=errors, latencies=latencies, timestamp_ms=ts
    )
    for doc in docs:
        validate_emf(json.loads(json.dumps(doc, allow_nan=False)))
        assert doc["_aws"]["Timestamp"] == ts
    assert sum(d.get("requests", 0) for d in docs) == requests
    assert sum(d.get("errors", 0) for d in docs) == errors
    got = [v for d in docs for v in _values(d, "latency")]
    assert got == [round(v, 3) for v in latencies]
    assert len(docs) == max(1, -(-len(latencies) // MAX_VALUES))


def _values(doc: dict[str, Any], name: str) -> list[float]:
    value = doc.get(name)
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


CALLS = st.lists(
    st.tuples(
        st.sampled_from(["api", "worker", "notify-user"]),
        st.sampled_from(["v1", "v2"]),
        st.sampled_from(["stable", "canary"]),
        st.one_of(st.none(), st.floats(0, 5000, allow_nan=False)),
        st.booleans(),
    ),
    max_size=400,
)


@settings(max_examples=100, deadline=None)
@given(calls=CALLS, flush_every=st.integers(1, 500))
def test_the_writer_lines_sum_to_the_recorded_calls(
    calls: list[tuple[str, str, str, float | None, bool]], flush_every: int
) -> None:
    out = io.StringIO()
    writer = EmfWriter("team/shop", stream=out, clock=lambda: 1_700_000_000.5)
    want: dict[tuple[str, ...], list[int]] = {}
    for i, (fn, version, channel, ms, error) in enumerate(calls):
        writer.add("shop", fn, version, channel, ms, error=error)
        counts = want.setdefault(("shop", fn, version, channel), [0, 0, 0])
        counts[0] += 1
        counts[1] += error
        counts[2] += ms is not None
        if (i + 1) % flush_every == 0:
            writer.flush()
    writer.flush()
    got: dict[tuple[str, ...], list[int]] = {}
    lines = out.getvalue().splitlines()
    assert writer.written == len(lines)
    for line in lines:
        doc = json.loads(line)
        validate_emf(doc)
        assert doc["_aws"]["Timestamp"] == 1_700_000_000_500
        assert doc["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "team/shop"
        counts = got.setdefault(tuple(doc[d] for d in DIMENSIONS), [0, 0, 0])
        counts[0] += doc.get("requests", 0)
        counts[1] += doc.get("errors", 0)
        counts[2] += len(_values(doc, "latency"))
    assert got == want


def test_a_failing_stream_never_raises_into_the_invocation() -> None:
    class Broken(io.StringIO):
        def write(self, s: str) -> int:
            raise OSError("stdout closed")

    writer = EmfWriter(stream=Broken())
    writer.add(*KEY, 5.0)
    assert writer.flush() == 0
    assert writer.written == 0


def test_the_setting_and_the_namespace() -> None:
    assert emf_enabled({}, default=True) is True
    assert emf_enabled({}, default=False) is False
    assert emf_enabled({"COALMINE_EMF": "1"}, default=False) is True
    assert emf_enabled({"COALMINE_EMF": "0"}, default=True) is False
    with pytest.raises(InvalidInput, match="COALMINE_EMF"):
        emf_enabled({"COALMINE_EMF": "maybe"}, default=True)
    assert emf_namespace({}) == "coalmine"
    assert emf_namespace({"COALMINE_EMF_NAMESPACE": "shop/prod"}) == "shop/prod"
    with pytest.raises(InvalidInput, match="namespace"):
        emf_namespace({"COALMINE_EMF_NAMESPACE": "x" * 1025})
