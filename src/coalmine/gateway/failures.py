"""`FailureLog`: one log line per failed call, and a bounded number of tracebacks.

A version that fails every request (a handler that raises, a Lambda that
errors, an upstream that refuses connections) must not bury the gateway's log
under a traceback per request. Every failed call gets one line at WARNING:

    call failed: notify-user v2 -> 502 KeyError: 'order_id' (request 6f1c...)

and the details (the handler's traceback) are rate-limited per (function,
version, error type): the first failure of a kind in an interval logs its
traceback, the others of that interval do not, and the next interval's first
one says how many went without (``12 more KeyError failures of notify-user v2
in the last 60 s without a traceback``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from coalmine.core.ports import CallFailed

__all__ = ["DETAIL_INTERVAL", "FailureLog", "error_type"]

log = logging.getLogger(__name__)

DETAIL_INTERVAL = 60.0
"""seconds: at most one traceback per (function, version, error type) in each"""
_MAX_KINDS = 4096
"""kinds of failure remembered; beyond it the oldest window is dropped"""
_MAX_SUMMARY = 300
"""characters of the error summary kept on the one line"""


@dataclass(slots=True)
class _Window:
    since: float
    without_detail: int = 0


def error_type(failure: CallFailed) -> str:
    """What kind of failure: the handler's exception, the Lambda error type, or the status."""
    cause = failure.__cause__
    if cause is not None:
        return type(cause).__name__
    error = failure.extra.get("error")
    if isinstance(error, dict) and error.get("type"):
        return str(error["type"])
    return f"HTTP {failure.status}"


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_SUMMARY else line[: _MAX_SUMMARY - 1] + "…"


class FailureLog:
    """Logs a failed call in one line; its traceback only once per kind and interval."""

    def __init__(
        self,
        *,
        interval: float = DETAIL_INTERVAL,
        logger: logging.Logger = log,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self._log = logger
        self._clock = clock
        self._windows: dict[tuple[str, str, str], _Window] = {}

    def failed(self, function: str, version: str, failure: CallFailed, request_id: str) -> None:
        """Log one failed call of ``function`` ``version``; never raises."""
        kind = error_type(failure)
        self._log.warning(
            "call failed: %s %s -> %d %s (request %s)",
            function,
            version,
            failure.status,
            _one_line(failure.detail),
            request_id,
        )
        key = (function, version, kind)
        now = self._clock()
        window = self._windows.get(key)
        if window is not None and now - window.since < self.interval:
            window.without_detail += 1
            return
        if window is not None and window.without_detail:
            self._log.warning(
                "%d more %s failures of %s %s in the last %.0f s without a traceback",
                window.without_detail,
                kind,
                function,
                version,
                now - window.since,
            )
        if window is None and len(self._windows) >= _MAX_KINDS:
            del self._windows[next(iter(self._windows))]
        self._windows[key] = _Window(now)
        cause = failure.__cause__
        if cause is not None and cause.__traceback__ is not None:
            self._log.warning(
                "traceback of %s in %s %s (request %s; the first of its kind in %.0f s)",
                kind,
                function,
                version,
                request_id,
                self.interval,
                exc_info=(type(cause), cause, cause.__traceback__),
            )
