"""The argument checks every stream implementation makes, each written once.

Each raises `coalmine.core.errors.InvalidInput` (a ``ValueError``) with the
same message whichever stream makes it; `tests/integrations/test_contract.py`
holds every implementation to that.
"""

from __future__ import annotations

from collections.abc import Mapping

from coalmine.core.errors import InvalidInput

__all__ = ["check_ack_wait", "check_max_records", "check_topic", "refuse_headers"]


def check_ack_wait(ack_wait: float) -> None:
    """``ack_wait`` (seconds before an unacked record comes back) is positive."""
    if ack_wait <= 0:
        raise InvalidInput("ack_wait must be a positive number of seconds")


def check_max_records(max_records: int) -> None:
    """``Stream.consume`` asks for at least one record."""
    if max_records < 1:
        raise InvalidInput("max_records must be at least 1")


def check_topic(topic: object) -> None:
    """A topic is a non-empty string (a broker may restrict it further)."""
    if not isinstance(topic, str) or not topic:
        raise InvalidInput("a topic is a non-empty string")


def refuse_headers(headers: Mapping[str, str] | None, why: str) -> None:
    """A stream without record headers refuses them; ``why`` starts the message."""
    if headers:
        raise InvalidInput(f"{why}: wrap the context in the envelope (coalmine.sdk.publish does)")
