"""In-function routing's one choice: run here, or forward to the decided Lambda version.

A function behind a Lambda alias that stays on the stable version decides
each caller's channel itself (`coalmine.sdk.route_lambda`). This module owns
the pure part: reading a version's Lambda target (`lambda_ref`) and whether
an invocation runs where it landed or is forwarded (`plan_forward`). The one
rule that keeps chains loop-free: an invocation that was itself forwarded
never forwards again, whatever its own (possibly stale) snapshot says.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from coalmine.core.model import Target, TargetKind

__all__ = [
    "ForwardPlan",
    "ForwardReason",
    "LambdaRef",
    "lambda_ref",
    "plan_forward",
]


@dataclass(frozen=True, slots=True)
class LambdaRef:
    """A Lambda version target: what to pass the Invoke API as FunctionName and Qualifier."""

    function_name: str
    """the unqualified ARN, or the bare name (region and account from the AWS configuration)"""
    qualifier: str
    """a published version number or an alias name"""

    @property
    def name(self) -> str:
        """The function's bare name (the last part of an ARN)."""
        return self.function_name.rsplit(":", 1)[-1]

    @property
    def region(self) -> str | None:
        """The region an ARN names; None for a bare name (the configured region)."""
        parts = self.function_name.split(":")
        return parts[3] if len(parts) == 7 else None


def lambda_ref(target: str | None) -> LambdaRef | None:
    """The Lambda function and qualifier of a version target, or None for another kind.

    Accepts a qualified ARN ``arn:aws:lambda:REGION:ACCOUNT:function:NAME:QUALIFIER``
    and the short form ``lambda:NAME:QUALIFIER``, as `Target.parse` does; raises
    InvalidInput for a target that looks like a Lambda one but is not qualified.
    """
    if not isinstance(target, str) or not target.startswith(("arn:", "lambda:")):
        return None
    if target.startswith("arn:") and ":lambda:" not in target:
        return None  # another service's ARN: not a version of a function
    if Target.parse(target).kind is not TargetKind.LAMBDA:
        return None
    head, _, qualifier = target.rpartition(":")
    return LambdaRef(head if head.startswith("arn:") else head.split(":", 1)[1], qualifier)


class ForwardReason(StrEnum):
    """Why an invocation runs where it landed or is forwarded. Every plan carries one."""

    FORWARD = "forward"
    """the decision names another Lambda version of this function: invoke it"""
    RUNNING = "running"
    """the decided version is the one running (by version number or by alias)"""
    FORWARDED = "forwarded"
    """this invocation was forwarded already: it never forwards again (no loops)"""
    NO_TARGET = "no_target"
    """the decided version has no Lambda target in the snapshot: run here"""
    NOT_IN_LAMBDA = "not_in_lambda"
    """no Lambda context says which version runs (a local test, a script): run here"""


@dataclass(frozen=True, slots=True)
class ForwardPlan:
    reason: ForwardReason
    target: LambdaRef | None = None
    """where to forward; set only when ``forward``"""

    @property
    def forward(self) -> bool:
        return self.reason is ForwardReason.FORWARD


def plan_forward(
    running_version: str | None,
    invoked_qualifier: str | None,
    target: LambdaRef | None,
    *,
    forwarded: bool,
) -> ForwardPlan:
    """Whether to forward an invocation to ``target`` (the decided version's Lambda target).

    ``running_version`` is ``context.function_version`` (a number or ``$LATEST``);
    ``invoked_qualifier`` the qualifier of ``context.invoked_function_arn`` (the
    alias or version the caller named), so a target naming an alias matches
    when the invocation came through that alias.
    """
    if forwarded:
        return ForwardPlan(ForwardReason.FORWARDED)
    if target is None:
        return ForwardPlan(ForwardReason.NO_TARGET)
    if running_version is None and invoked_qualifier is None:
        return ForwardPlan(ForwardReason.NOT_IN_LAMBDA)
    if target.qualifier in (running_version, invoked_qualifier):
        return ForwardPlan(ForwardReason.RUNNING)
    return ForwardPlan(ForwardReason.FORWARD, target)
