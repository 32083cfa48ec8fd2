"""A failing version logs one line per call, not a traceback per request."""

from __future__ import annotations

import logging
import re

import pytest

from coalmine.core.ports import CallFailed
from coalmine.gateway.failures import FailureLog, error_type
from tests.gateway.test_gateway import running

LINE = re.compile(r"^call failed: boom v1 -> 502 .*ValueError: kaboom \(request ([0-9a-f-]{36})\)$")


async def test_n_failing_requests_log_n_lines_and_one_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    n = 25
    caplog.set_level(logging.WARNING, logger="coalmine.gateway")
    async with running() as gw:
        answered = []
        for i in range(n):
            r = await gw.client.get("/boom", headers={"x-user-id": f"u{i}"})
            assert r.status_code == 502
            answered.append(r.headers["x-coalmine-request-id"])
    records = [r for r in caplog.records if r.name.startswith("coalmine.gateway")]
    lines = [r for r in records if r.getMessage().startswith("call failed:")]
    assert len(lines) == n, [r.getMessage() for r in records]
    ids = set()
    for record in lines:
        message = record.getMessage()
        assert "\n" not in message
        assert record.exc_info is None
        found = LINE.match(message)
        assert found, message
        ids.add(found.group(1))
    assert len(ids) == n  # each line names its own request (the handler's aws_request_id)
    assert ids == set(answered)  # and the client was told which
    with_traceback = [r for r in records if r.exc_info is not None]
    assert len(with_traceback) == 1
    assert with_traceback[0].exc_info is not None
    assert with_traceback[0].exc_info[0] is ValueError
    # nothing else in the gateway logged a traceback (uvicorn's error log included)
    assert not [r for r in caplog.records if r.exc_info is not None and r not in with_traceback]


def _raised(exc: Exception) -> CallFailed:
    try:
        try:
            raise exc
        except Exception as cause:
            raise CallFailed(502, f"handler raised {type(cause).__name__}: {cause}") from cause
    except CallFailed as failed:
        return failed


def test_details_are_rate_limited_per_kind_and_counted_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    failures = FailureLog(interval=60.0, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="coalmine.gateway.failures")

    for i in range(10):
        failures.failed("notify-user", "v2", _raised(KeyError("order_id")), f"r{i}")
    failures.failed("notify-user", "v2", _raised(ValueError("bad")), "r-value")
    failures.failed("notify-user", "v3", _raised(KeyError("order_id")), "r-v3")
    failures.failed("place-order", "v1", CallFailed(504, "no answer\nwithin 1s"), "r-late")
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    # one per (function, version, error type); a CallFailed without a cause has none to show
    assert [r.exc_info[0] for r in tracebacks if r.exc_info] == [KeyError, ValueError, KeyError]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("call failed")]
    assert len(lines) == 13
    assert (
        lines[0]
        == "call failed: notify-user v2 -> 502 handler raised KeyError: 'order_id' (request r0)"
    )
    assert lines[-1] == "call failed: place-order v1 -> 504 no answer within 1s (request r-late)"

    caplog.clear()
    now[0] = 61.0
    failures.failed("notify-user", "v2", _raised(KeyError("order_id")), "r-next")
    messages = [r.getMessage() for r in caplog.records]
    assert messages[1] == (
        "9 more KeyError failures of notify-user v2 in the last 61 s without a traceback"
    )
    assert sum(r.exc_info is not None for r in caplog.records) == 1


def test_the_kind_of_a_failure() -> None:
    assert error_type(_raised(KeyError("x"))) == "KeyError"
    lam = CallFailed(502, "Lambda failed", error={"type": "Runtime.ExitError", "message": ""})
    assert error_type(lam) == "Runtime.ExitError"
    assert error_type(CallFailed(504, "late")) == "HTTP 504"


def test_a_long_summary_stays_one_short_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="coalmine.gateway.failures")
    FailureLog().failed("f", "v1", CallFailed(502, "x\n" * 1000), "r")
    (record,) = caplog.records
    assert "\n" not in record.getMessage()
    assert len(record.getMessage()) < 400
