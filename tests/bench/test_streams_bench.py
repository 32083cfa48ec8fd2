"""Smoke test of bench/streams.py: a quick run ends with its JSON line.

Only the shape of the output is checked; speed is never asserted in unit tests.
"""

from __future__ import annotations

from tests.bench import run_bench
from tests.services import need

BROKERS = ("nats", "redis", "memory")
FIELDS = ("overhead_us_per_record", "ratio")


def test_quick_run_ends_with_the_json_line() -> None:
    need("nats")
    need("redis")
    out = run_bench("streams.py", "--quick")  # a table, then the JSON line
    assert list(out)[:4] == ["bench", *BROKERS]
    assert out["bench"] == "streams"
    for broker in BROKERS:
        result = out[broker]
        assert isinstance(result, dict), (broker, result)
        for key in FIELDS:
            value = result[key]
            assert isinstance(value, int | float), (broker, key, value)
            assert not isinstance(value, bool), (broker, key)
        assert result["ratio"] > 0, (broker, result)
