"""The Lambda alias a release keeps true: which version, and which weights, it should have now.

An app whose ``release.lambda_alias`` is set (SAM's ``AutoPublishAlias``,
e.g. ``live``) has that alias of each changed function kept by the
controller (`coalmine.controller.alias`), when the function's baseline and
candidate are two published versions of one Lambda function. This module owns
the pure part: which functions qualify (`plan_aliases`), what the alias should
be for a release's phase, route mode and exposure (`alias_routing`), and when
two alias states are the same (`AliasRouting.same`)::

    phase                          user mode    request mode
    pending                        baseline     baseline
    running, paused                baseline     baseline + candidate at exposure
                                                (the candidate alone at 100%)
    promoting, promoted            candidate    candidate
    rolling back, rolled back,     baseline     baseline
    failed

In user mode coalmine routes the users, so the alias stays on the baseline
until the release is promoted; request mode is what CodeDeploy does (the
alias's weights shift step by step).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from coalmine.core.bucketing import BUCKETS
from coalmine.core.errors import InvalidInput
from coalmine.core.forwarding import LambdaRef, lambda_ref
from coalmine.core.model import ROLLED_BACK_PHASES, Phase, RouteMode

__all__ = [
    "ALIAS_NAME",
    "AliasCallFailed",
    "AliasPlan",
    "AliasRouting",
    "AliasedFunction",
    "alias_routing",
    "plan_aliases",
    "validate_alias_name",
]

ALIAS_NAME = re.compile(r"(?!\d+$)[A-Za-z0-9_-]{1,128}")
"""what Lambda accepts as an alias name: 1-128 of A-Z a-z 0-9 - _, not only digits"""
_VERSION_NUMBER = re.compile(r"[1-9]\d*")
_SAME_WEIGHT = 1e-6
"""weights closer than this are equal (AWS answers them as doubles)"""


class AliasCallFailed(Exception):
    """Reading or moving an alias failed; the message is what AWS (or the client) said."""


def validate_alias_name(value: object) -> str:
    """``value`` if it is a valid Lambda alias name, else `InvalidInput` saying what is."""
    if not isinstance(value, str) or not ALIAS_NAME.fullmatch(value):
        raise InvalidInput(
            f"invalid Lambda alias name {value!r}: use 1-128 letters, digits, '-' or '_',"
            " not only digits (e.g. 'live')"
        )
    return value


@dataclass(frozen=True, slots=True)
class AliasRouting:
    """An alias's ``FunctionVersion`` and ``RoutingConfig.AdditionalVersionWeights``."""

    version: str
    """the version that takes every invocation not given to ``weights``"""
    weights: Mapping[str, float] = field(default_factory=dict)
    """other version -> its share of the invocations, in [0, 1)"""

    def __post_init__(self) -> None:
        # a weight of 0 routes nothing: the same alias as one without it
        kept = {v: float(w) for v, w in self.weights.items() if w > 0}
        object.__setattr__(self, "weights", MappingProxyType(dict(sorted(kept.items()))))

    def same(self, other: AliasRouting) -> bool:
        """Whether ``other`` routes as this does (weights compared to 1e-6)."""
        if self.version != other.version or set(self.weights) != set(other.weights):
            return False
        return all(abs(w - other.weights[v]) < _SAME_WEIGHT for v, w in self.weights.items())

    def describe(self) -> str:
        """``version 1``, or ``version 1, 10% to version 2``."""
        shares = "".join(f", {w * 100:g}% to version {v}" for v, w in self.weights.items())
        return f"version {self.version}{shares}"

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "weights": dict(self.weights)}


@dataclass(frozen=True, slots=True)
class AliasedFunction:
    """A changed function whose alias is kept: two published versions of one Lambda function."""

    function: str
    """the coalmine function"""
    lambda_function: str
    """the Lambda function: an unqualified ARN, or a bare name"""
    baseline: str
    """the baseline's published version number"""
    candidate: str


@dataclass(frozen=True, slots=True)
class AliasPlan:
    """Which changed functions of a release have their alias kept, and why the others not."""

    alias: str
    functions: tuple[AliasedFunction, ...]
    skipped: Mapping[str, str]
    """function -> why its alias is not kept (a sentence)"""


def _aliased(function: str, baseline: str | None, candidate: str | None) -> AliasedFunction | str:
    try:
        old, new = lambda_ref(baseline), lambda_ref(candidate)
    except InvalidInput as exc:
        return f"a target is not a valid Lambda version: {exc}"
    if old is None or new is None:
        return "its baseline and candidate are not both Lambda versions"
    if not _same_function(old, new):
        return (
            f"its baseline and candidate are different Lambda functions ({old.function_name},"
            f" {new.function_name}): one alias cannot route between them"
        )
    for ref in (old, new):
        if not _VERSION_NUMBER.fullmatch(ref.qualifier):
            return (
                f"{ref.function_name}:{ref.qualifier} names an alias or $LATEST, not a published"
                " version: an alias routes between published versions only"
            )
    if old.qualifier == new.qualifier:
        return f"its baseline and candidate are the same Lambda version ({old.qualifier})"
    # prefer the ARN: it names the region the alias lives in
    name = old.function_name if old.function_name.startswith("arn:") else new.function_name
    return AliasedFunction(function, name, old.qualifier, new.qualifier)


def _same_function(a: LambdaRef, b: LambdaRef) -> bool:
    if a.function_name.startswith("arn:") and b.function_name.startswith("arn:"):
        return a.function_name == b.function_name
    return a.name == b.name  # a bare name: region and account from the AWS configuration


def plan_aliases(
    alias: str,
    changed: Mapping[str, tuple[str | None, str | None]],
) -> AliasPlan:
    """The plan for ``alias`` over ``changed``: function -> (baseline target, candidate target).

    A function is kept when both targets are published versions (numbers) of
    one Lambda function; every other one is in ``skipped`` with the reason.
    """
    validate_alias_name(alias)
    kept: list[AliasedFunction] = []
    skipped: dict[str, str] = {}
    for function in sorted(changed):
        got = _aliased(function, *changed[function])
        if isinstance(got, str):
            skipped[function] = got
        else:
            kept.append(got)
    return AliasPlan(alias, tuple(kept), MappingProxyType(skipped))


def alias_routing(
    phase: Phase, route_mode: RouteMode, exposure: int, function: AliasedFunction
) -> AliasRouting:
    """What the alias of ``function`` should be for a release in ``phase`` at ``exposure``.

    See the module's table. Weights are ``exposure / 10000``, always in
    (0, 1): at 0% the alias is on the baseline alone, at 100% on the
    candidate alone.
    """
    baseline, candidate = function.baseline, function.candidate
    if phase in (Phase.PROMOTING, Phase.PROMOTED):
        return AliasRouting(candidate)
    if phase in ROLLED_BACK_PHASES or route_mode is RouteMode.USER:
        return AliasRouting(baseline)
    # request mode, pending / running / paused: the alias shares the invocations
    if exposure >= BUCKETS:
        return AliasRouting(candidate)
    if exposure <= 0:
        return AliasRouting(baseline)
    return AliasRouting(baseline, {candidate: exposure / BUCKETS})
