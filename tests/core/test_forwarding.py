"""The pure forwarding decision of in-function routing: forward or run here, and never loop."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coalmine.core.errors import InvalidInput
from coalmine.core.forwarding import ForwardReason, LambdaRef, lambda_ref, plan_forward

ARN = "arn:aws:lambda:us-east-1:123456789012:function:notify-user"

qualifiers = st.sampled_from(["1", "2", "3", "$LATEST", "live", "canary"])
maybe = st.none() | qualifiers
targets = st.none() | st.builds(LambdaRef, st.sampled_from([ARN, "notify-user"]), qualifiers)


def test_lambda_ref_reads_both_target_forms() -> None:
    assert lambda_ref(f"{ARN}:7") == LambdaRef(ARN, "7")
    assert lambda_ref(f"{ARN}:7").name == "notify-user"  # type: ignore[union-attr]
    assert lambda_ref("lambda:notify-user:live") == LambdaRef("notify-user", "live")
    assert lambda_ref("shop.api:handler") is None
    assert lambda_ref("http://127.0.0.1:9000/api") is None
    assert lambda_ref(None) is None
    with pytest.raises(InvalidInput, match="qualified function ARN"):
        lambda_ref(ARN)  # unqualified: which version would run is unknown
    with pytest.raises(InvalidInput, match="lambda:NAME:VERSION_OR_ALIAS"):
        lambda_ref("lambda:notify-user")


@given(maybe, maybe, targets)
def test_a_forwarded_invocation_never_forwards_again(
    running: str | None, invoked: str | None, target: LambdaRef | None
) -> None:
    plan = plan_forward(running, invoked, target, forwarded=True)
    assert not plan.forward
    assert plan.reason is ForwardReason.FORWARDED


@given(maybe, maybe, targets, st.booleans())
def test_forward_exactly_when_another_lambda_version_is_decided(
    running: str | None, invoked: str | None, target: LambdaRef | None, forwarded: bool
) -> None:
    plan = plan_forward(running, invoked, target, forwarded=forwarded)
    expected = (
        not forwarded
        and target is not None
        and (running is not None or invoked is not None)
        and target.qualifier not in (running, invoked)
    )
    assert plan.forward is expected
    assert (plan.target is not None) is plan.forward
    if plan.forward:
        assert plan.target == target


@given(qualifiers, targets)
def test_a_target_naming_the_alias_the_call_came_through_runs_here(
    running: str, target: LambdaRef | None
) -> None:
    if target is None:
        return
    plan = plan_forward(running, target.qualifier, target, forwarded=False)
    assert plan.reason is ForwardReason.RUNNING


def test_each_reason() -> None:
    ref = LambdaRef(ARN, "2")
    assert plan_forward("1", "live", ref, forwarded=False).reason is ForwardReason.FORWARD
    assert plan_forward("2", "live", ref, forwarded=False).reason is ForwardReason.RUNNING
    assert plan_forward("1", None, None, forwarded=False).reason is ForwardReason.NO_TARGET
    assert plan_forward(None, None, ref, forwarded=False).reason is ForwardReason.NOT_IN_LAMBDA
