"""The echo function of the `FunctionTarget` contract, as a local handler (``echo_fn:handler``).

It answers what it was called with, as JSON: method, path rest, query,
headers and body; ``?status=N`` sets the status. The HTTP and mock versions
in test_function_target_contract.py answer the same for the same call.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs


def echoed(
    method: str, rest: str, query: str, headers: dict[str, str], body: bytes
) -> tuple[int, dict[str, str], str]:
    """The status, headers and body every echo answers with."""
    status = int(parse_qs(query).get("status", ["200"])[0])
    data = {
        "method": method,
        "rest": rest,
        "query": query,
        "headers": headers,
        "body": body.decode("latin-1"),
    }
    return status, {"content-type": "application/json", "x-echo": "yes"}, json.dumps(data)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    body = event.get("body", "")
    raw = base64.b64decode(body) if event["isBase64Encoded"] else body.encode("utf-8")
    proxy = (event.get("pathParameters") or {}).get("proxy")
    status, headers, text = echoed(
        event["requestContext"]["http"]["method"],
        f"/{proxy}" if proxy else "",
        event["rawQueryString"],
        event["headers"],
        raw,
    )
    return {"statusCode": status, "headers": headers, "body": text}


def boom(event: dict[str, Any], context: Any) -> None:
    raise RuntimeError("the function failed")
