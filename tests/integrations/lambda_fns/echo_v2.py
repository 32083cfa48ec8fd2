"""A handler that answers with what it saw: its event, its context, its module's call count."""

from __future__ import annotations

from typing import Any

from tests.integrations.lambda_fns.gate import release

calls = 0


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global calls
    calls += 1
    cc = context.client_context
    return {
        "event": event,
        "calls": calls,
        "v2": True,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "request_id": context.aws_request_id,
        "custom": cc.custom if cc is not None else None,
    }


def fail(event: dict[str, Any], context: Any) -> None:
    raise ValueError(f"bad order {event.get('order')}")


def slow(event: dict[str, Any], context: Any) -> str:
    release.wait(float(event.get("wait", 5)))
    return "late"


def unmarshallable(event: dict[str, Any], context: Any) -> object:
    return {1, 2}
