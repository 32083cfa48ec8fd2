"""Local handlers for the judge's end-to-end test: one function, a healthy stable and three candidates.

``v1`` (stable) and ``v4`` (a healthy candidate) take about 2 ms; ``v2`` is
slower (30 ms); ``v3`` answers 500 to every fifth call (20% errors). The
runtime loads each version's module separately, so each keeps its own count.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

_calls = itertools.count(1)


def _ok(version: str, seconds: float) -> dict[str, Any]:
    time.sleep(seconds)
    return {"version": version}


def v1(event: dict[str, Any], context: object = None) -> dict[str, Any]:
    return _ok("v1", 0.002)


def v2_slow(event: dict[str, Any], context: object = None) -> dict[str, Any]:
    return _ok("v2", 0.030)


def v3_failing(event: dict[str, Any], context: object = None) -> dict[str, Any]:
    if next(_calls) % 5 == 0:
        time.sleep(0.002)
        return {"statusCode": 500, "body": '{"error": "v3 failed"}'}
    return _ok("v3", 0.002)


def v4_healthy(event: dict[str, Any], context: object = None) -> dict[str, Any]:
    return _ok("v4", 0.002)
