"""In-function routing: the stable alias forwards canary users to their version (one hop),
a forwarded invocation never forwards again, errors surface, metrics count where it ran."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from coalmine.core import decide
from coalmine.core.snapshot import RoutingSnapshot
from coalmine.sdk import Client, ForwardedError, current_decision, route_lambda
from coalmine.sdk.invoke import FORWARDED_KEY
from tests.aws.fake_lambda import APP, FakeLambda, http_event, lambda_context, lambda_snapshot
from tests.sdk import KEYRING, MockPlane


def _client(snap: RoutingSnapshot) -> Client:
    return Client(
        "http://plane",
        "sdk-key",
        apps=[APP],
        signing_keys=KEYRING,
        max_age=3600,
        http=MockPlane(snap).http(),
        metrics=True,
        flush_interval=3600,
    )


def _users(snap: RoutingSnapshot, canary: bool) -> list[str]:
    return [u for u in (f"u{i}" for i in range(300)) if decide(snap.state, u).is_canary is canary]


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for c in made:
        c.close()


def _deploy(lam: FakeLambda, version: str, client: Client, ran: list[tuple[str, Any]]) -> None:
    """Version ``version`` of ``api``: one execution environment holding ``client``."""

    @route_lambda(client, APP, "api", user="x-user-id", lambda_client=lam)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        decision = current_decision()
        channel = decision.channel if decision is not None else None  # None: a batch
        ran.append((version, channel))
        if event.get("body") == "boom":
            raise RuntimeError("the candidate broke")
        return {"statusCode": 200, "body": f"api {version} {channel}"}

    lam.deploy("api", version, handler)


def test_stable_users_run_here_and_canary_users_pay_one_hop(clients: list[Client]) -> None:
    snap = lambda_snapshot(2000)
    lam, ran = FakeLambda(), []
    env1, env2 = _client(snap), _client(snap)
    clients += [env1, env2]
    _deploy(lam, "1", env1, ran)
    _deploy(lam, "2", env2, ran)
    lam.alias("api", "live", "1")  # the alias stays 100% on the stable version

    stable, canary = _users(snap, False)[0], _users(snap, True)[0]
    answer = lam.invoke(
        FunctionName="api", Qualifier="live", Payload=json.dumps(http_event(stable))
    )
    assert json.loads(answer["Payload"].read())["body"] == "api 1 stable"
    assert [c.version for c in lam.calls] == ["1"]

    lam.calls.clear()
    answer = lam.invoke(
        FunctionName="api", Qualifier="live", Payload=json.dumps(http_event(canary))
    )
    assert json.loads(answer["Payload"].read())["body"] == "api 2 canary"
    assert [(c.qualifier, c.version) for c in lam.calls] == [("live", "1"), ("2", "2")]
    forwarded = lam.calls[1]
    assert forwarded.custom[FORWARDED_KEY] == "1"
    # the signed context rides in the event's baggage header and in the ClientContext
    assert forwarded.event["headers"]["baggage"].startswith("coalmine=")
    assert forwarded.custom["coalmine"] == forwarded.event["headers"]["baggage"][9:]
    assert forwarded.event["body"] == http_event(canary)["body"]

    # each invocation is counted once, under the version that ran it
    assert env1.recorder is not None
    assert env2.recorder is not None
    assert env1.recorder.total(APP, "api", "v1", "stable").requests == 1  # type: ignore[union-attr]
    assert env1.recorder.total(APP, "api", "v2", "canary") is None
    assert env2.recorder.total(APP, "api", "v2", "canary").requests == 1  # type: ignore[union-attr]


def test_an_error_of_the_forwarded_version_surfaces_as_an_error(clients: list[Client]) -> None:
    snap = lambda_snapshot(2000)
    lam, ran = FakeLambda(), []
    env1, env2 = _client(snap), _client(snap)
    clients += [env1, env2]
    _deploy(lam, "1", env1, ran)
    _deploy(lam, "2", env2, ran)
    event = {**http_event(_users(snap, True)[0]), "body": "boom"}
    stable_env = lam.handlers[("api", "1")]
    with pytest.raises(ForwardedError, match="the candidate broke") as info:
        stable_env(event, lambda_context("api", "1", "live"))
    assert info.value.kind == "Unhandled"
    assert env2.recorder.total(APP, "api", "v2", "canary").errors == 1  # type: ignore[union-attr]


def test_two_environments_with_different_snapshots_do_not_loop(clients: list[Client]) -> None:
    """v1's environment has seen the release (user canary -> v2); v2's holds a snapshot where
    the release is rolled back (user -> v1). The forwarded invocation runs on v2, once."""
    fresh = lambda_snapshot(10000)
    stale = lambda_snapshot(10000, revision=2, phase="rolled_back")
    lam, ran = FakeLambda(), []
    env1, env2 = _client(fresh), _client(stale)
    clients += [env1, env2]
    _deploy(lam, "1", env1, ran)
    _deploy(lam, "2", env2, ran)
    user = "u1"
    assert decide(stale.state, user).version_of("api") == "v1"  # it would forward back
    answer = lam.invoke(FunctionName="api", Qualifier="1", Payload=json.dumps(http_event(user)))
    assert answer.get("FunctionError") is None
    assert [c.version for c in lam.calls] == ["1", "2"]
    assert [v for v, _ in ran] == ["2"]


def test_the_context_from_a_client_context_pins_and_batches_run_here(
    clients: list[Client],
) -> None:
    snap = lambda_snapshot(0)  # nobody is canary by bucket
    lam, ran = FakeLambda(), []
    env1, env2 = _client(snap), _client(snap)
    clients += [env1, env2]
    _deploy(lam, "1", env1, ran)
    _deploy(lam, "2", env2, ran)
    canary = decide(lambda_snapshot(10000).state, "u1")
    token = env1.encode(canary)
    assert token is not None
    cc = base64.b64encode(json.dumps({"custom": {"coalmine": token}}).encode()).decode()
    # a Lambda-to-Lambda call: no headers in the event, the context in the ClientContext
    lam.invoke(FunctionName="api", Qualifier="1", Payload=b'{"user": "u1"}', ClientContext=cc)
    assert [c.version for c in lam.calls] == ["1", "2"]
    assert ran[-1] == ("2", "canary")
    lam.calls.clear()
    batch = {"Records": [{"messageId": "m1", "body": "{}"}]}
    lam.handlers[("api", "1")](batch, lambda_context("api", "1", "live"))
    assert lam.calls == []  # batches are the event-source router's job: run here
    assert ran[-1] == ("1", None)


def test_forwarded_marker_in_http_headers_is_not_trusted(clients: list[Client]) -> None:
    snap = lambda_snapshot(10000)
    lam, ran = FakeLambda(), []
    env1, env2 = _client(snap), _client(snap)
    clients += [env1, env2]
    _deploy(lam, "1", env1, ran)
    _deploy(lam, "2", env2, ran)
    lam.alias("api", "live", "1")
    event = http_event("u1")
    event["headers"][FORWARDED_KEY] = "1"  # a caller over HTTP cannot skip the hop
    lam.invoke(FunctionName="api", Qualifier="live", Payload=json.dumps(event))
    assert [c.version for c in lam.calls] == ["1", "2"]


def test_async_handlers_are_refused() -> None:
    snap = lambda_snapshot(0)
    with _client(snap) as client, pytest.raises(TypeError, match="synchronous"):

        @route_lambda(client, APP, "api")
        async def handler(event: Any, context: Any) -> None:
            return None
