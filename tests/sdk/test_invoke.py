"""Lambda to Lambda: an instrumented boto3 client sends invokes of the app's functions to the
current user's version and carries the signed context (botocore Stubber: exact params)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from coalmine.core import decide, decode_context
from coalmine.core.errors import InvalidInput
from coalmine.core.routing import RoutingState
from coalmine.sdk import StaticRouter, instrument_lambda, uninstrument_lambda, use
from coalmine.sdk.handler import decide_event
from coalmine.sdk.invoke import client_context, context_token, inject_event
from tests.aws.fake_lambda import (
    APP,
    arn,
    fake_aws_env,
    http_event,
    lambda_context,
    lambda_snapshot,
)
from tests.sdk import KEYRING

SNAP = lambda_snapshot(2000)


class Source:
    def snapshot(self, app: str) -> Any:
        return SNAP if app == APP else None


@pytest.fixture
def lam() -> Iterator[Any]:
    with fake_aws_env():
        client = boto3.client("lambda")
        instrument_lambda(client, Source(), APP)
        yield client


def _user(canary: bool) -> str:
    return next(
        u for u in (f"u{i}" for i in range(300)) if decide(SNAP.state, u).is_canary is canary
    )


def _scope(canary: bool) -> Any:
    router = StaticRouter(SNAP.state, KEYRING)
    decision = router.decide(APP, _user(canary))
    return use(decision, router.encode(decision)), router.encode(decision)


def _ok() -> dict[str, Any]:
    return {"StatusCode": 200, "Payload": io.BytesIO(b"{}")}


def _cc(custom: dict[str, str]) -> str:
    return base64.b64encode(json.dumps({"custom": custom}, separators=(",", ":")).encode()).decode()


def test_an_invoke_goes_to_the_version_of_the_current_channel_with_the_context(lam: Any) -> None:
    for canary, qualifier in ((False, "1"), (True, "2")):
        scope, token = _scope(canary)
        payload = json.dumps({"order": 7}).encode()
        with Stubber(lam) as stub, scope:
            stub.add_response(
                "invoke",
                _ok(),
                {
                    "FunctionName": "notify-user",
                    "Qualifier": qualifier,
                    "Payload": payload,  # not API Gateway-shaped: left as it is
                    "ClientContext": _cc({"coalmine": token}),
                },
            )
            lam.invoke(FunctionName="notify-user", Payload=payload)
            stub.assert_no_pending_responses()


def test_an_api_gateway_payload_gets_the_baggage_header(lam: Any) -> None:
    scope, token = _scope(True)
    event = http_event("someone", baggage="tier=gold")
    sent: list[dict[str, Any]] = []
    lam.meta.events.register(
        "before-parameter-build.lambda.Invoke", lambda params, **_: sent.append(dict(params))
    )
    with Stubber(lam) as stub, scope:
        stub.add_response("invoke", _ok())
        lam.invoke(FunctionName=arn("api"), Payload=json.dumps(event))
    assert sent[0]["FunctionName"] == arn("api")
    assert sent[0]["Qualifier"] == "2"
    body = json.loads(sent[0]["Payload"])
    assert body["headers"]["baggage"] == f"tier=gold,coalmine={token}"
    assert body["headers"]["x-user-id"] == "someone"
    assert body["body"] == event["body"]


def test_explicit_qualifiers_other_functions_and_calls_outside_a_scope_pass(lam: Any) -> None:
    scope, token = _scope(True)
    with Stubber(lam) as stub:
        # outside a decision: untouched
        stub.add_response("invoke", _ok(), {"FunctionName": "notify-user"})
        lam.invoke(FunctionName="notify-user")
        with scope:
            # the caller's qualifier wins; the context still travels
            stub.add_response(
                "invoke",
                _ok(),
                {
                    "FunctionName": "notify-user",
                    "Qualifier": "1",
                    "ClientContext": _cc({"coalmine": token}),
                },
            )
            lam.invoke(FunctionName="notify-user", Qualifier="1")
            stub.add_response(
                "invoke",
                _ok(),
                {"FunctionName": "notify-user:1", "ClientContext": _cc({"coalmine": token})},
            )
            lam.invoke(FunctionName="notify-user:1")
            # a function the app does not know
            stub.add_response("invoke", _ok(), {"FunctionName": "billing"})
            lam.invoke(FunctionName="billing")
        stub.assert_no_pending_responses()


def test_a_target_naming_another_lambda_function_rewrites_the_name() -> None:
    snap = lambda_snapshot(10000)
    targets = {
        **snap.targets,
        "notify-user": {"v1": arn("shop-notify", "4"), "v2": arn("shop-notify", "5")},
    }
    renamed = type(snap)(snap.state, snap.revision, targets)
    router = StaticRouter(renamed.state, KEYRING)
    decision = router.decide(APP, "u1")
    with fake_aws_env():
        lam = boto3.client("lambda")
        instrument_lambda(lam, type("S", (), {"snapshot": lambda self, app: renamed})(), APP)
        with Stubber(lam) as stub, use(decision, None):
            stub.add_response(
                "invoke", _ok(), {"FunctionName": arn("shop-notify"), "Qualifier": "5"}
            )
            lam.invoke(FunctionName="notify-user")
            # the Lambda name of a target finds its function too
            stub.add_response("invoke", _ok(), {"FunctionName": "shop-notify", "Qualifier": "5"})
            lam.invoke(FunctionName="shop-notify")
        uninstrument_lambda(lam, APP)
        with Stubber(lam) as stub, use(decision, None):
            stub.add_response("invoke", _ok(), {"FunctionName": "notify-user"})
            lam.invoke(FunctionName="notify-user")


def test_the_callees_handler_reads_the_context_from_the_client_context() -> None:
    router = StaticRouter(lambda_snapshot(0).state, KEYRING)
    canary = decide(lambda_snapshot(10000).state, "u1")
    token = router.encode(canary)
    assert token is not None
    context = lambda_context("notify-user", "2", "2", {"coalmine": token})
    assert context_token(context) == token
    got = decide_event(router, APP, {"user": "u1"}, None, context)  # type: ignore[arg-type]
    assert got.reason == "pinned"
    assert got.is_canary
    # an event's own baggage wins over the client context
    stable = decide(lambda_snapshot(0).state, "u1")
    mine = router.encode(stable)
    got = decide_event(router, APP, http_event("u1", baggage=f"coalmine={mine}"), None, context)  # type: ignore[arg-type]
    assert not got.is_canary
    decoded = decode_context(token, KEYRING, now=__import__("time").time())
    assert decoded is not None


def test_client_context_merges_and_stays_within_the_limit() -> None:
    mine = _cc({"tenant": "acme"})
    merged = json.loads(base64.b64decode(client_context(mine, {"coalmine": "t"}) or ""))
    assert merged["custom"] == {"tenant": "acme", "coalmine": "t"}
    assert client_context(None, {"coalmine": "x" * 4000}) is None
    assert client_context("not base64 json!", {"coalmine": "t"}) is None
    assert inject_event([1, 2], "t") == [1, 2]
    v1 = {"headers": {"X-User": "a"}, "multiValueHeaders": {"Baggage": ["a=1", "coalmine=old"]}}
    out = inject_event(v1, "new")
    assert out["multiValueHeaders"]["Baggage"] == ["a=1,coalmine=new"]
    assert out["headers"]["baggage"] == "coalmine=new"


def test_only_a_lambda_client_can_be_instrumented() -> None:
    with fake_aws_env(), pytest.raises(InvalidInput, match="boto3 Lambda client"):
        instrument_lambda(boto3.client("sqs"), Source(), APP)
    _ = RoutingState
