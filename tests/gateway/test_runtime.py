"""The local runtime on its own: namespaces, the Lambda-shaped event, return-value mapping."""

from __future__ import annotations

import base64
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from coalmine.core.model import Channel, Decision, Reason
from coalmine.core.ports import Call
from coalmine.gateway.asgi import CallFailed, Message
from coalmine.gateway.runtime import LocalTarget, Reply, build_event, reply_of

DECISION = Decision("shop", "r1", Channel.CANARY, {"fn": "v2"}, Reason.COHORT)


def make_call(body: bytes = b"", **kw: Any) -> Call:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    fields: dict[str, Any] = {
        "target": "tests.gateway.fixtures.counter:plain",
        "decision": DECISION,
        "function": "fn",
        "version": "v2",
        "method": "POST",
        "path": "/fn/a/b",
        "raw_rest": b"/a/b",
        "query": b"x=1",
        "headers": [(b"host", b"gw.example.com"), (b"cookie", b"a=1"), (b"cookie", b"b=2")],
        "receive": receive,
        "has_body": bool(body),
    }
    fields.update(kw)
    return Call(**fields)


def test_event_is_an_http_api_v2_payload() -> None:
    event = build_event(make_call(), b"\xff\x00", request_id="rid", now=1.5, source_ip="10.0.0.1")
    assert event["version"] == "2.0"
    assert event["routeKey"] == "$default"
    assert (event["rawPath"], event["rawQueryString"]) == ("/fn/a/b", "x=1")
    assert event["cookies"] == ["a=1", "b=2"]
    assert "cookie" not in event["headers"]
    assert event["headers"]["host"] == "gw.example.com"
    assert event["requestContext"]["domainName"] == "gw.example.com"
    assert event["requestContext"]["domainPrefix"] == "gw"
    assert event["requestContext"]["http"]["sourceIp"] == "10.0.0.1"
    assert event["requestContext"]["timeEpoch"] == 1500
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\xff\x00"
    empty = build_event(make_call(raw_rest=b""), b"", request_id="r", now=0, source_ip="")
    assert "body" not in empty
    assert "pathParameters" not in empty


def test_return_values_map_like_the_lambda_proxy_integration() -> None:
    assert reply_of({"a": 1}) == Reply(200, [(b"content-type", b"application/json")], b'{"a":1}')
    assert reply_of("hi").body == b'"hi"'
    assert reply_of(None).body == b"null"
    r = reply_of(
        {
            "statusCode": 418,
            "headers": {"X-A": 1, "Content-Length": "999"},
            "multiValueHeaders": {"x-b": ["1", "2"]},
            "cookies": ["c=1"],
            "body": base64.b64encode(b"\x00\x01").decode(),
            "isBase64Encoded": True,
        }
    )
    assert r.status == 418
    assert r.body == b"\x00\x01"
    assert r.headers == [
        (b"x-a", b"1"),
        (b"x-b", b"1"),
        (b"x-b", b"2"),
        (b"set-cookie", b"c=1"),
        (b"content-type", b"application/json"),
    ]
    assert reply_of({"statusCode": 204}).body == b""
    with pytest.raises(ValueError, match="not an HTTP status"):
        reply_of({"statusCode": 99})
    with pytest.raises(TypeError):
        reply_of({1, 2})


@contextmanager
def handler_package(tmp_path: Path, files: dict[str, str]) -> Iterator[str]:
    pkg = tmp_path / "gwpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name, text in files.items():
        (pkg / name).write_text(text)
    sys.path.insert(0, str(tmp_path))
    try:
        yield "gwpkg"
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == "gwpkg" or m.startswith("gwpkg.")]:
            del sys.modules[name]


async def test_every_version_gets_its_own_module_and_imports_are_shared(tmp_path: Path) -> None:
    mod = (
        "from gwpkg import shared\n"
        "calls = 0\n"
        "def handler(event, context):\n"
        "    global calls\n"
        "    calls += 1\n"
        "    shared.total += 1\n"
        "    return {'calls': calls, 'total': shared.total, 'name': __name__}\n"
    )
    with handler_package(tmp_path, {"fn.py": mod, "shared.py": "total = 0\n"}):
        runtime = LocalTarget(workers=2, timeout=5)
        try:
            results = []
            for version in ("v1", "v2", "v1", "1.0-beta"):
                call = make_call(
                    target="gwpkg.fn:handler", version=version, function="my-fn", method="GET"
                )
                reply = await runtime.run(call)
                results.append(reply.body.decode())
        finally:
            await runtime.close()
    assert results == [
        '{"calls":1,"total":1,"name":"coalmine_fn.my_fn.v1.gwpkg.fn"}',
        '{"calls":1,"total":2,"name":"coalmine_fn.my_fn.v2.gwpkg.fn"}',
        '{"calls":2,"total":3,"name":"coalmine_fn.my_fn.v1.gwpkg.fn"}',
        '{"calls":1,"total":4,"name":"coalmine_fn.my_fn.1_0_beta.gwpkg.fn"}',
    ]
    # closing the runtime unregisters its modules
    assert not [m for m in sys.modules if m.startswith("coalmine_fn.my_fn.")]


async def test_load_failures_are_502_and_retried(tmp_path: Path) -> None:
    with handler_package(tmp_path, {"broken.py": "raise RuntimeError('bad import')\n"}):
        runtime = LocalTarget(workers=1, timeout=5)
        try:
            for ref, message in [
                ("gwpkg.broken:handler", "RuntimeError: bad import"),
                ("gwpkg:missing", "AttributeError"),
                ("gwpkg.nothere:handler", "ModuleNotFoundError"),
                ("sys:path", "not a Python source file"),
            ]:
                with pytest.raises(CallFailed, match=message) as info:
                    await runtime.run(make_call(target=ref))
                assert info.value.status == 502
            assert not [m for m in sys.modules if m.startswith("coalmine_fn.fn.v2.gwpkg.broken")]
        finally:
            await runtime.close()


async def test_the_handler_runs_in_the_given_scope() -> None:
    seen: list[tuple[Decision, str | None]] = []

    @contextmanager
    def scope(decision: Decision, token: str | None) -> Iterator[None]:
        seen.append((decision, token))
        yield

    runtime = LocalTarget(workers=1, timeout=5, scope=scope)
    try:
        reply = await runtime.run(
            make_call(target="tests.gateway.fixtures.counter:plain", token="tok")
        )
    finally:
        await runtime.close()
    assert reply.status == 200
    assert seen == [(DECISION, "tok")]


async def test_a_returned_value_that_is_not_a_response_is_502() -> None:
    runtime = LocalTarget(workers=1, timeout=5)
    try:
        with pytest.raises(CallFailed, match="not a response") as info:
            await runtime.run(make_call(target="tests.gateway.fixtures.counter:not_json"))
        assert info.value.status == 502
    finally:
        await runtime.close()
