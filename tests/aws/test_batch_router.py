"""The event-source-mapping router: each record runs on its channel's version, in order per
shard and message group, and failures come back as Lambda's partial batch response."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalmine.core.context import RoutingContext, decode_context
from coalmine.core.model import Channel
from coalmine.core.ports import LambdaInvocation, LambdaInvoker
from coalmine.sdk import record_decisions, wrap
from coalmine.sdk.batch_router import (
    FORWARD_FIELD,
    LambdaFunction,
    parse_lambda_target,
    route_batch,
)
from tests.aws import (
    APP,
    FUNCTION,
    FUNCTION_ARN,
    KEYRING,
    InProcessInvoker,
    LambdaContext,
    SnapshotRouter,
    kinesis_record,
    make_snapshot,
    sqs_record,
    users_by_channel,
)

SNAP = make_snapshot(3000)
STABLE, CANARY = users_by_channel(SNAP)


class Deployment:
    """notify-user v1 (Lambda version 1, behind the alias) and v2 (version 2), both wrapped.

    Each version's handler keeps the records it got, with the channel and the
    version of ``notify-user`` their decision names, and fails the records whose
    id is in ``fail``.
    """

    def __init__(self, *, v2_router: SnapshotRouter | None = None) -> None:
        self.seen: dict[str, list[tuple[str, str, str | None]]] = {"v1": [], "v2": []}
        self.fail: set[str] = set()
        self.raise_in: set[str] = set()
        self.router = SnapshotRouter(SNAP)
        self.v2_router = v2_router or SnapshotRouter(SNAP)
        self.invoker = InProcessInvoker({"2": self._wrapped("v2", self.v2_router)})
        self.v1 = self._wrapped("v1", self.router)

    def _wrapped(self, version: str, router: SnapshotRouter) -> Any:
        @route_batch(router, APP, FUNCTION, invoker=self.invoker_proxy)
        def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
            if version in self.raise_in:
                raise RuntimeError(f"{version} is broken")
            failures = []
            for r in record_decisions():
                rid = _id(r.record)
                self.seen[version].append(
                    (rid, str(r.decision.channel), r.decision.version_of(FUNCTION))
                )
                if rid in self.fail:
                    failures.append({"itemIdentifier": rid})
            return {"batchItemFailures": failures}

        return handle

    @property
    def invoker_proxy(self) -> LambdaInvoker:
        deployment = self

        class Proxy:
            def invoke(self, function: str, qualifier: str, payload: bytes) -> LambdaInvocation:
                return deployment.invoker.invoke(function, qualifier, payload)

        return Proxy()

    def run(self, records: list[dict[str, Any]]) -> set[str]:
        """Invoke v1 through its alias with ``records``; the reported failures."""
        result = self.v1({"Records": records}, LambdaContext("1"))
        return {item["itemIdentifier"] for item in result["batchItemFailures"]}

    def ids(self, version: str) -> list[str]:
        return [rid for rid, _, _ in self.seen[version]]


def _id(record: dict[str, Any]) -> str:
    if "kinesis" in record:
        return str(record["kinesis"]["sequenceNumber"])
    return str(record["messageId"])


def test_each_record_runs_on_its_channels_version_in_order() -> None:
    d = Deployment()
    users = [STABLE[0], CANARY[0], STABLE[1], CANARY[1], CANARY[2], STABLE[2]]
    records = [sqs_record(f"m{i}", "{}", user=u) for i, u in enumerate(users)]
    assert d.run(records) == set()
    assert d.ids("v1") == ["m0", "m2", "m5"]
    assert d.ids("v2") == ["m1", "m3", "m4"]
    assert all(ch == "stable" and v == "v1" for _, ch, v in d.seen["v1"])
    assert all(ch == "canary" and v == "v2" for _, ch, v in d.seen["v2"])
    # one invoke of version 2, of the function's ARN, with the batch's shape and a mark
    [(function, qualifier, event)] = d.invoker.calls
    assert (function, qualifier) == (FUNCTION_ARN, "2")
    assert [r["messageId"] for r in event["Records"]] == ["m1", "m3", "m4"]
    assert event["Records"][0] == records[1]
    assert event[FORWARD_FIELD]["forwarded_by"] == f"{FUNCTION}:v1"
    for token in event[FORWARD_FIELD]["contexts"]:
        ctx = decode_context(token, KEYRING, now=time.time())
        assert isinstance(ctx, RoutingContext)
        assert ctx.channel is Channel.CANARY


def test_only_canary_records_make_an_invoke() -> None:
    d = Deployment()
    assert d.run([sqs_record(f"m{i}", "{}", user=u) for i, u in enumerate(STABLE[:5])]) == set()
    assert d.invoker.calls == []
    assert d.ids("v1") == [f"m{i}" for i in range(5)]


def test_a_context_pins_its_users_record_and_no_one_elses() -> None:
    d = Deployment()
    canary = d.router.decide(APP, CANARY[0])
    # the user's chain was decided canary upstream (say, before the exposure dropped)
    token = d.router.encode(canary, user=STABLE[0])
    assert token is not None
    record = sqs_record("m0", "{}", user=STABLE[0], baggage=f"coalmine={token},other=1")
    # the same context on another user's record grants that user nothing
    replayed = sqs_record("m1", "{}", user=STABLE[1], baggage=f"coalmine={token}")
    assert d.run([record, replayed]) == set()
    assert d.ids("v2") == ["m0"]
    assert d.ids("v1") == ["m1"]


def test_a_forwarded_batch_never_forwards_and_keeps_the_forwarders_decision() -> None:
    # version 2 sees exposure 0 (a stale snapshot): it would send every user to v1
    stale = SnapshotRouter(make_snapshot(0))
    data = json.dumps({"order": 1}).encode()  # a producer without coalmine: no context
    records = [kinesis_record("100", data, partition_key=CANARY[0])]
    handled: list[tuple[str, Channel]] = []

    def by_partition_key(record: Any) -> str:
        return str(record["kinesis"]["partitionKey"])

    @route_batch(stale, APP, FUNCTION, user=by_partition_key)
    def v2(event: dict[str, Any], context: Any) -> dict[str, Any]:
        handled.extend((_id(r.record), r.decision.channel) for r in record_decisions())
        return {"batchItemFailures": []}

    invoker = InProcessInvoker({"2": v2})
    v1 = route_batch(SnapshotRouter(SNAP), APP, FUNCTION, user=by_partition_key, invoker=invoker)(
        lambda event, context: {"batchItemFailures": []}
    )
    assert v1({"Records": records}, LambdaContext("1")) == {"batchItemFailures": []}
    assert handled == [("100", Channel.CANARY)]
    assert len(invoker.calls) == 1  # version 2 ran it here, and invoked nothing


def test_a_kinesis_failure_fails_every_later_record_of_the_shard() -> None:
    d = Deployment()
    order = [STABLE[0], CANARY[0], STABLE[1], CANARY[1], STABLE[2]]
    # the user key travels in the envelope (the partition key is another one)
    records = [
        kinesis_record(str(100 + i), _envelope_with_user({"i": i}, u), partition_key=f"p{i}")
        for i, u in enumerate(order)
    ]
    d.fail = {"101"}  # the first canary record fails in version 2
    assert d.run(records) == {"101", "102", "103", "104"}
    assert d.ids("v2") == ["101", "103"]


def test_a_local_failure_holds_back_the_later_records_of_its_shard() -> None:
    d = Deployment()
    order = [CANARY[0], STABLE[0], CANARY[1], STABLE[1]]
    records = [
        kinesis_record(str(100 + i), _envelope_with_user({"i": i}, u), partition_key=u)
        for i, u in enumerate(order)
    ]
    d.fail = {"101"}
    assert d.run(records) == {"101", "102", "103"}
    # the canary record after the failed stable one was not sent
    assert d.ids("v2") == ["100"]
    assert [r["kinesis"]["sequenceNumber"] for r in d.invoker.calls[0][2]["Records"]] == ["100"]


def test_fifo_order_holds_per_message_group_and_standard_queues_have_none() -> None:
    d = Deployment()
    records = [
        sqs_record("a1", "{}", user=STABLE[0], group="A"),
        sqs_record("b1", "{}", user=CANARY[0], group="B"),
        sqs_record("a2", "{}", user=CANARY[1], group="A"),
        sqs_record("b2", "{}", user=STABLE[1], group="B"),
        sqs_record("b3", "{}", user=CANARY[2], group="B"),
    ]
    d.fail = {"a1"}
    # group A stops at a1 (a2 is not sent); group B runs on
    assert d.run(records) == {"a1", "a2"}
    assert d.ids("v2") == ["b1", "b3"]

    d = Deployment()
    d.fail = {"s0"}
    records = [sqs_record(f"s{i}", "{}", user=u) for i, u in enumerate([STABLE[0], CANARY[0]])]
    assert d.run(records) == {"s0"}
    assert d.ids("v2") == ["s1"]


def test_a_function_error_or_a_failed_invoke_fails_the_forwarded_records() -> None:
    d = Deployment()
    d.raise_in = {"v2"}
    records = [sqs_record(f"m{i}", "{}", user=u) for i, u in enumerate([STABLE[0], CANARY[0]])]
    # v2's own router reports its handler's failure as batchItemFailures
    assert d.run(records) == {"m1"}

    d = Deployment()
    d.invoker.refuse = RuntimeError("TooManyRequestsException")
    assert d.run(records) == {"m1"}
    assert d.ids("v1") == ["m0"]

    # a function error (the answer's X-Amz-Function-Error) fails them too
    class Erroring:
        def invoke(self, function: str, qualifier: str, payload: bytes) -> LambdaInvocation:
            return LambdaInvocation(b'{"errorMessage": "boom"}', "Unhandled")

    router = SnapshotRouter(SNAP)
    handle = route_batch(router, APP, FUNCTION, invoker=Erroring())(
        lambda event, context: {"batchItemFailures": []}
    )
    result = handle({"Records": records}, LambdaContext("1"))
    assert result == {"batchItemFailures": [{"itemIdentifier": "m1"}]}


def test_a_raising_handler_fails_its_records_and_holds_back_the_rest() -> None:
    d = Deployment()
    d.raise_in = {"v1"}
    records = [
        sqs_record("a1", "{}", user=STABLE[0], group="A"),
        sqs_record("a2", "{}", user=CANARY[0], group="A"),
    ]
    assert d.run(records) == {"a1", "a2"}
    assert d.invoker.calls == []


def test_without_a_lambda_target_records_run_here() -> None:
    d = Deployment()
    d.router.snap = None  # no routing yet: everything is stable, nothing is forwarded
    assert d.run([sqs_record("m0", "{}", user=CANARY[0])]) == set()
    assert d.ids("v1") == ["m0"]
    assert d.invoker.calls == []


def test_the_running_version_is_found_by_qualifier_or_alias() -> None:
    d = Deployment()
    records = [sqs_record("m0", "{}", user=CANARY[0])]
    # invoked as version 2 directly: the canary record is this version's own
    result = d.v1({"Records": records}, LambdaContext("2", alias=None))
    assert result == {"batchItemFailures": []}
    assert d.invoker.calls == []
    # an alias target (":canary") matches the alias it was invoked through
    snap = make_snapshot(3000)
    targets = {FUNCTION: {"v1": f"{FUNCTION_ARN}:live", "v2": f"{FUNCTION_ARN}:canary"}}
    d.router.snap = type(snap)(snap.state, 2, targets)
    d.run(records)
    assert [(f, q) for f, q, _ in d.invoker.calls] == [(FUNCTION_ARN, "canary")]


def test_records_run_here_are_counted_per_version() -> None:
    d = Deployment()
    d.fail = {"m0"}
    d.run([sqs_record(f"m{i}", "{}", user=u) for i, u in enumerate([STABLE[0], CANARY[0]])])
    assert d.router.counted == [(FUNCTION, "v1", "stable", True)]
    assert d.v2_router.counted == [(FUNCTION, "v2", "canary", False)]


def test_other_events_pass_through() -> None:
    router = SnapshotRouter(SNAP)
    handle = route_batch(router, APP, FUNCTION)(lambda event, context: ("ran", event))
    assert handle({"detail-type": "x", "detail": {}}, None) == (
        "ran",
        {"detail-type": "x", "detail": {}},
    )
    assert handle({"Records": []}, None) == ("ran", {"Records": []})


def test_bad_arguments_are_refused() -> None:
    router = SnapshotRouter(SNAP)
    with pytest.raises(TypeError, match="user must be"):
        route_batch(router, APP, FUNCTION, user=3)  # type: ignore[arg-type]

    async def handler(event: Any, context: Any) -> None: ...

    with pytest.raises(TypeError, match="synchronous"):
        route_batch(router, APP, FUNCTION)(handler)


def test_lambda_targets_parse() -> None:
    assert parse_lambda_target(f"{FUNCTION_ARN}:7") == LambdaFunction(FUNCTION_ARN, "7")
    assert parse_lambda_target("lambda:notify-user:live") == LambdaFunction("notify-user", "live")
    assert LambdaFunction(FUNCTION_ARN, "7").name == FUNCTION
    for ref in ("shop.api:handler", "http://x/y", f"{FUNCTION_ARN}", "lambda::1", None):
        assert parse_lambda_target(ref) is None


def _envelope_with_user(payload: Any, user: str) -> bytes:
    doc = json.loads(wrap(payload))
    doc["user"] = user
    return json.dumps(doc).encode()


# properties --------------------------------------------------------------------------

_record = st.tuples(st.sampled_from(STABLE[:4] + CANARY[:4]), st.sampled_from("ABC"), st.booleans())


@settings(max_examples=60, deadline=None)
@given(st.lists(_record, min_size=1, max_size=12), st.booleans())
def test_routing_and_failure_properties(spec: list[tuple[str, str, bool]], fifo: bool) -> None:
    d = Deployment()
    records = [
        sqs_record(f"m{i}", "{}", user=u, group=g if fifo else None)
        for i, (u, g, _) in enumerate(spec)
    ]
    d.fail = {f"m{i}" for i, (_, _, bad) in enumerate(spec) if bad}
    canary = {f"m{i}" for i, (u, _, _) in enumerate(spec) if u in CANARY}
    reported = d.run(records)
    ran = d.ids("v1") + d.ids("v2")
    # every record ran at most once, on its own channel's version, in batch order
    assert len(ran) == len(set(ran))
    assert set(d.ids("v2")) <= canary
    assert not set(d.ids("v1")) & canary
    for version in ("v1", "v2"):
        assert d.ids(version) == sorted(d.ids(version), key=lambda m: int(m[1:]))
    # a record that ran and failed is reported; one that never ran is reported
    assert {m for m in ran if m in d.fail} <= reported
    assert {f"m{i}" for i in range(len(spec))} - set(ran) <= reported
    if fifo:  # per group: everything from the first failure on is reported, nothing before
        for group in "ABC":
            members = [f"m{i}" for i, (_, g, _) in enumerate(spec) if g == group]
            failed_at = [i for i, m in enumerate(members) if m in reported]
            if failed_at:
                assert set(members[failed_at[0] :]) <= reported
                assert not set(members[: failed_at[0]]) & reported
                assert members[failed_at[0]] in d.fail
    else:
        assert reported == d.fail & set(ran)
