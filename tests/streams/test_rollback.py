"""Rollback (and promotion) while records are in flight, with and without draining.

By default a record pinned to the canary of a release rolled back since runs
the baseline version (DESIGN rule 2), which is right when the baseline reads
the candidate's events. When it cannot, ``drain_canary_after_rollback``
keeps such records on the candidate version named in their own context.
Promotion is the mirror image: records pinned to stable meet the candidate.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from coalmine.core import Keyring, Phase, Reason, RoutingState
from coalmine.integrations import MemoryStream
from coalmine.sdk.dispatch import RecordStatus, RouteReason, dispatch
from coalmine.sdk.publish import publish
from coalmine.sdk.router import StaticRouter
from tests.streams import food
from tests.streams.food import APP, CONSUMER, NOTIFY_USER

CANARY_USERS = food.users_in(0, 3000, 3)
STABLE_USERS = food.users_in(3000, 10000, 3)


def strict_v1(event: dict[str, Any]) -> dict[str, Any]:
    """A baseline consumer that cannot read the candidate's events (not backward compatible)."""
    unknown = set(event) - {"type", "order_id", "user"}
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")
    return NOTIFY_USER["v1"](event)


STRICT = {"v1": strict_v1, "v2": NOTIFY_USER["v2"]}


def in_flight(headers: bool) -> tuple[MemoryStream, StaticRouter, list[Any]]:
    """Orders placed at 30%: canary users' events come from place-order v2, the others' v1."""
    s = MemoryStream(supports_headers=headers)
    r = food.router(3000)
    for i, user in enumerate(CANARY_USERS + STABLE_USERS):
        food.place_order(s, "orders", r, user, f"o-{i}")
    records = s.consume("orders", "notify", "c", max_records=100, timeout=0)
    assert len(records) == 6
    return s, r, records


def settle(r: StaticRouter, phase: Phase) -> None:
    rel = r.state.release
    assert rel is not None
    r.state = RoutingState(APP, food.CURRENT, dataclasses.replace(rel, phase=phase))


def by_user(result: Any) -> dict[str | None, Any]:
    return {o.record.key: o for o in result.outcomes}


@pytest.fixture(params=[True, False], ids=["headers", "envelope"])
def headers(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def test_after_rollback_canary_records_run_the_baseline(headers: bool) -> None:
    _, r, records = in_flight(headers)
    settle(r, Phase.ROLLED_BACK)
    result = dispatch(records, NOTIFY_USER, app=APP, function=CONSUMER, router=r)
    assert result.ok  # notify-user v1 reads v2's events: it ignores delivery_eta
    assert {o.version for o in result.outcomes} == {"v1"}
    assert {o.decision.reason for o in result.outcomes} == {Reason.ROLLED_BACK}


def test_when_the_baseline_cannot_read_them_the_default_fails(headers: bool) -> None:
    _, r, records = in_flight(headers)
    settle(r, Phase.ROLLED_BACK)
    result = dispatch(records, STRICT, app=APP, function=CONSUMER, router=r)
    assert_canary_records_fail(result)


def assert_canary_records_fail(result: Any) -> None:
    """Every canary record fails (or waits behind one that failed); stable ones never fail."""
    got = by_user(result)
    assert all(not got[u].ok for u in CANARY_USERS)
    failed = [o for o in result.failures if o.status is RecordStatus.FAILED]
    assert {o.record.key for o in failed} <= set(CANARY_USERS)
    assert all("unknown fields ['delivery_eta']" in (o.error or "") for o in failed)
    assert {o.status for o in result.failures} <= {RecordStatus.FAILED, RecordStatus.SKIPPED}


def test_draining_keeps_canary_records_on_their_candidate_version(headers: bool) -> None:
    _, r, records = in_flight(headers)
    settle(r, Phase.ROLLED_BACK)
    result = dispatch(
        records,
        STRICT,
        app=APP,
        function=CONSUMER,
        router=r,
        drain_canary_after_rollback=True,
    )
    assert result.ok
    got = by_user(result)
    for user in CANARY_USERS:
        o = got[user]
        assert (o.version, o.reason, o.decision.channel.value) == (
            "v2",
            RouteReason.DRAINING,
            "canary",
        )
        assert o.decision.detail is not None
        assert "release r1 was rolled back" in o.decision.detail
    for user in STABLE_USERS:
        assert got[user].version == "v1"
        assert got[user].reason is RouteReason.CONTEXT


def test_draining_does_not_touch_new_records_after_rollback(headers: bool) -> None:
    s, r, _ = in_flight(headers)
    settle(r, Phase.ROLLED_BACK)
    publish(s, "orders", {"type": "order_placed", "order_id": "late"}, key=CANARY_USERS[0])
    records = s.consume("orders", "notify", "c", max_records=10, timeout=0)
    (o,) = dispatch(
        records, STRICT, app=APP, function=CONSUMER, router=r, drain_canary_after_rollback=True
    ).outcomes
    assert (o.version, o.reason, o.status) == ("v1", RouteReason.USER_KEY, RecordStatus.OK)


def test_after_promotion_stable_records_meet_the_candidate_unless_drained(headers: bool) -> None:
    _, r, records = in_flight(headers)
    settle(r, Phase.PROMOTED)
    plain = dispatch(records, NOTIFY_USER, app=APP, function=CONSUMER, router=r)
    # the article's failure, at promotion: v1 events reach notify-user v2
    assert all(not by_user(plain)[u].ok for u in STABLE_USERS)
    assert any("KeyError" in (o.error or "") for o in plain.failures)
    drained = dispatch(
        records,
        NOTIFY_USER,
        app=APP,
        function=CONSUMER,
        router=r,
        drain_stable_after_promotion=True,
    )
    assert drained.ok
    got = by_user(drained)
    assert {got[u].version for u in STABLE_USERS} == {"v1"}
    assert {got[u].version for u in CANARY_USERS} == {"v2"}


def test_a_release_rolled_back_earlier_drains_the_same_way() -> None:
    _, r, records = in_flight(True)
    rel = r.state.release
    assert rel is not None
    next_release = dataclasses.replace(rel, id="r2", salt="other-salt", exposure=0)
    r.state = RoutingState(APP, food.CURRENT, next_release, rolled_back={"r1": food.CURRENT})
    plain = dispatch(records, STRICT, app=APP, function=CONSUMER, router=r)
    assert_canary_records_fail(plain)
    drained = dispatch(
        records, STRICT, app=APP, function=CONSUMER, router=r, drain_canary_after_rollback=True
    )
    assert drained.ok


def test_a_context_that_does_not_verify_is_never_drained() -> None:
    s = MemoryStream()
    other = StaticRouter(food.state(10000), Keyring.single(b"another-secret-0123456789abcdef"))
    decision = other.decide(APP, "mallory", None)
    publish(s, "orders", {"order_id": "o"}, key="mallory", token=other.encode(decision))
    records = s.consume("orders", "notify", "c", max_records=10, timeout=0)
    r = food.router(3000)
    settle(r, Phase.ROLLED_BACK)
    (o,) = dispatch(
        records, STRICT, app=APP, function=CONSUMER, router=r, drain_canary_after_rollback=True
    ).outcomes
    assert o.version == "v1"
    assert o.reason is RouteReason.CONTEXT


def test_draining_needs_a_keyring() -> None:
    class KeylessRouter:
        def decide(self, app: str, user_key: str | None, context: str | None = None) -> Any:
            return food.router(3000).decide(app, user_key, context)

    with pytest.raises(ValueError, match="draining verifies each record's context"):
        dispatch(
            [],
            STRICT,
            app=APP,
            function=CONSUMER,
            router=KeylessRouter(),
            drain_canary_after_rollback=True,
        )
    result = dispatch(
        [],
        STRICT,
        app=APP,
        function=CONSUMER,
        router=KeylessRouter(),
        drain_canary_after_rollback=True,
        keyring=food.KEYRING,
    )
    assert result.outcomes == ()
