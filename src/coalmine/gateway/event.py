"""The API Gateway HTTP API event (payload format 2.0) a version is called with, and its answer.

`build_event` makes the event a function behind an HTTP API receives, as a
dict (a local handler gets it as is); `event_json` renders the same event
straight to the JSON a Lambda Invoke request carries, without the dict and
`json.dumps` (the Lambda target's hot path: ``bench/gateway.py``); both agree
(``tests/gateway/test_event.py``). `reply_of` maps what a handler returns to
an HTTP reply as the Lambda proxy integration does.
"""

from __future__ import annotations

import base64
import itertools
import uuid
from email.utils import formatdate
from functools import lru_cache
from json.encoder import encode_basestring
from typing import Any
from urllib.parse import parse_qsl

from coalmine.core.ports import Call
from coalmine.gateway.asgi import RawHeaders, Reply, json_body

__all__ = ["RequestIds", "build_event", "event_json", "reply_of"]


class RequestIds:
    """``requestContext.requestId`` values: UUID-shaped, unique, without a syscall each.

    A random 80-bit prefix per instance and a counter: ``uuid.uuid4()`` reads
    the OS's random source for every call, a few microseconds on the Lambda
    target's hot path, and an id needs to be unique, not unpredictable.
    """

    def __init__(self) -> None:
        prefix = uuid.uuid4().hex
        self._prefix = f"{prefix[:8]}-{prefix[8:12]}-{prefix[12:16]}-{prefix[16:20]}-"
        self._count = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._count) & 0xFFFFFFFFFFFF:012x}"


def _headers(call: Call) -> dict[str, str]:
    """The call's headers as API Gateway gives them: lower-case, repeats joined."""
    headers: dict[str, str] = {}
    for k, v in call.headers:
        name, value = k.decode("latin-1").lower(), v.decode("latin-1")
        if name in headers:
            value = headers[name] + ("; " if name == "cookie" else ",") + value
        headers[name] = value
    return headers


def _params(raw_query: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for key, val in parse_qsl(raw_query, keep_blank_values=True):
        params[key] = f"{params[key]},{val}" if key in params else val
    return params


@lru_cache(maxsize=4)
def _http_date(second: int) -> str:
    return formatdate(second, usegmt=True)


def build_event(
    call: Call, body: bytes, *, request_id: str, now: float, source_ip: str
) -> dict[str, Any]:
    """An API Gateway HTTP API payload 2.0 event for ``call``."""
    headers = _headers(call)
    cookies = [c.strip() for c in headers.pop("cookie", "").split(";") if c.strip()]
    raw_query = call.query.decode("latin-1")
    params = _params(raw_query)
    host = headers.get("x-forwarded-host", headers.get("host", "localhost"))
    rest = call.raw_rest.decode("latin-1").lstrip("/")
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": call.path,
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "coalmine-gateway",
            "domainName": host,
            "domainPrefix": host.split(".", 1)[0],
            "http": {
                "method": call.method,
                "path": call.path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": _http_date(int(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if params:
        event["queryStringParameters"] = params
    if rest:
        event["pathParameters"] = {"proxy": rest}
    if body:
        try:
            event["body"] = body.decode("utf-8")
        except UnicodeDecodeError:
            event["body"] = base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = True
    return event


def event_json(call: Call, body: bytes, *, request_id: str, now: float, source_ip: str) -> bytes:
    """``json_body(build_event(...))`` for the same arguments, rendered directly (UTF-8)."""
    q = encode_basestring
    headers = _headers(call)
    cookie = headers.pop("cookie", "")
    raw_query = call.query.decode("latin-1")
    host = headers.get("x-forwarded-host", headers.get("host", "localhost"))
    path = q(call.path)
    parts = [
        '{"version":"2.0","routeKey":"$default","rawPath":',
        path,
        ',"rawQueryString":',
        q(raw_query),
        ',"headers":{',
        ",".join([f"{q(k)}:{q(v)}" for k, v in headers.items()]),
        '},"requestContext":{"accountId":"anonymous","apiId":"coalmine-gateway","domainName":',
        q(host),
        ',"domainPrefix":',
        q(host.split(".", 1)[0]),
        ',"http":{"method":',
        q(call.method),
        ',"path":',
        path,
        ',"protocol":"HTTP/1.1","sourceIp":',
        q(source_ip),
        ',"userAgent":',
        q(headers.get("user-agent", "")),
        '},"requestId":',
        q(request_id),
        ',"routeKey":"$default","stage":"$default","time":"',
        _http_date(int(now)),
        '","timeEpoch":',
        str(int(now * 1000)),
        "}",
    ]
    encoded = False
    if body:
        try:
            text = q(body.decode("utf-8"))
        except UnicodeDecodeError:
            text = f'"{base64.b64encode(body).decode("ascii")}"'
            encoded = True
    parts.append(',"isBase64Encoded":true' if encoded else ',"isBase64Encoded":false')
    cookies = [c.strip() for c in cookie.split(";") if c.strip()]
    if cookies:
        parts += (',"cookies":[', ",".join([q(c) for c in cookies]), "]")
    params = _params(raw_query) if raw_query else {}
    if params:
        members = ",".join([f"{q(k)}:{q(v)}" for k, v in params.items()])
        parts += (',"queryStringParameters":{', members, "}")
    rest = call.raw_rest.decode("latin-1").lstrip("/")
    if rest:
        parts += (',"pathParameters":{"proxy":', q(rest), "}")
    if body:
        parts += (',"body":', text)
    parts.append("}")
    return "".join(parts).encode()


def reply_of(result: object) -> Reply:
    """Map a handler's return value as the Lambda proxy integration (payload 2.0) does.

    A dict with ``statusCode`` describes the response (``headers``,
    ``multiValueHeaders``, ``cookies``, ``body``, ``isBase64Encoded``); any
    other JSON-serialisable value is a 200 JSON body. Raises ValueError or
    TypeError when the value cannot be mapped.
    """
    if not (isinstance(result, dict) and "statusCode" in result):
        body = json_body(result)
        return Reply(200, [(b"content-type", b"application/json")], body)
    status = result["statusCode"]
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise ValueError(f"statusCode {status!r} is not an HTTP status")
    headers: RawHeaders = []
    for name, value in (result.get("headers") or {}).items():
        headers.append((str(name).lower().encode("latin-1"), str(value).encode("latin-1")))
    for name, values in (result.get("multiValueHeaders") or {}).items():
        for value in values:
            headers.append((str(name).lower().encode("latin-1"), str(value).encode("latin-1")))
    for cookie in result.get("cookies") or ():
        headers.append((b"set-cookie", str(cookie).encode("latin-1")))
    if not any(k == b"content-type" for k, _ in headers):
        headers.append((b"content-type", b"application/json"))
    raw = result.get("body")
    if raw is None:
        data = b""
    elif isinstance(raw, str):
        data = (
            base64.b64decode(raw, validate=True) if result.get("isBase64Encoded") else raw.encode()
        )
    else:  # lenient: API Gateway wants a string, a handler may return a dict
        data = json_body(raw)
    headers = [(k, v) for k, v in headers if k != b"content-length"]
    return Reply(status, headers, data)
