"""Whom an alarm's metrics blame: the candidate, the stable versions, or no one version.

A CloudWatch alarm watches metrics named by dimensions. Lambda's own
metrics by ``FunctionName``, or by ``Resource`` ``fn:live`` (an alias),
sum every version behind the function or the alias: such an alarm in ALARM
cannot tell whether the canary or stable is failing (the article's point
about alias-level alarms). Only dimensions that name one version can:

* ``AWS/Lambda``: ``Resource`` ``fn:7`` (a version) or ``ExecutedVersion``
  ``7`` (what an alias invocation ran) naming the Lambda version of a
  changed function's candidate or baseline target;
* coalmine's own EMF metrics (namespace ``coalmine`` by default, dimensions
  ``app``, ``function``, ``version``, ``channel``): ``channel`` ``canary``
  or ``stable``, else ``version`` naming a changed function's candidate or
  baseline.

`attribute` applies the rule to an alarm's metrics: `Blame.CANDIDATE` when
some metric names the candidate and none names stable (the alarm may roll
the release back), `Blame.STABLE` the other way round, and `Blame.SHARED`
otherwise (alias-wide, function-wide, candidate and stable together, or
nothing of the release: the judge decides whether the canary is to blame). Each answer carries the sentence that says why. Pure: the
CloudWatch adapter (`coalmine.integrations.cloudwatch`) reads the alarms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from coalmine.core.errors import InvalidInput
from coalmine.core.forwarding import LambdaRef, lambda_ref
from coalmine.core.records import ReleaseRecord

__all__ = [
    "DEFAULT_NAMESPACE",
    "LAMBDA_NAMESPACE",
    "AlarmMetric",
    "Attribution",
    "Blame",
    "FunctionScope",
    "ReleaseScope",
    "attribute",
    "attribute_metric",
    "release_scope",
]

LAMBDA_NAMESPACE = "AWS/Lambda"
DEFAULT_NAMESPACE = "coalmine"
"""the namespace of coalmine's EMF metrics unless ``COALMINE_EMF_NAMESPACE`` says otherwise"""


class Blame(StrEnum):
    CANDIDATE = "candidate"
    """the dimensions name the candidate version or the canary channel: may roll back"""
    STABLE = "stable"
    """they name only the stable (baseline) versions or channel: never the canary's doing"""
    SHARED = "shared"
    """alias-wide, function-wide, both channels, or nothing of the release: the judge decides"""


@dataclass(frozen=True, slots=True)
class AlarmMetric:
    """One metric an alarm watches: its namespace, name and dimensions."""

    namespace: str
    name: str
    dimensions: Mapping[str, str] = field(default_factory=dict)

    def label(self) -> str:
        dims = ", ".join(f"{k}={v}" for k, v in sorted(self.dimensions.items()))
        return f"{self.namespace} {self.name}" + (f" ({dims})" if dims else "")


@dataclass(frozen=True, slots=True)
class Attribution:
    """Whom an alarm blames, and the sentence that says why."""

    blame: Blame
    reason: str


@dataclass(frozen=True, slots=True)
class FunctionScope:
    """One function of a release: its versions in each channel and their Lambda targets."""

    function: str
    candidate: str
    baseline: str
    candidate_lambda: LambdaRef | None = None
    baseline_lambda: LambdaRef | None = None

    @property
    def changed(self) -> bool:
        return self.candidate != self.baseline


@dataclass(frozen=True, slots=True)
class ReleaseScope:
    """What an alarm's dimensions are matched against: one release's functions."""

    app: str
    release: str
    functions: tuple[FunctionScope, ...]
    namespace: str = DEFAULT_NAMESPACE
    """the CloudWatch namespace of coalmine's EMF metrics"""


def release_scope(
    release: ReleaseRecord,
    targets: Mapping[str, Mapping[str, str]],
    namespace: str = DEFAULT_NAMESPACE,
) -> ReleaseScope:
    """The scope of ``release``; ``targets`` maps function -> version -> target (the catalog)."""

    def ref(fn: str, version: str) -> LambdaRef | None:
        try:
            return lambda_ref(targets.get(fn, {}).get(version))
        except InvalidInput:
            return None

    functions = tuple(
        FunctionScope(
            fn,
            release.candidate[fn],
            release.baseline.get(fn, release.candidate[fn]),
            ref(fn, release.candidate[fn]),
            ref(fn, release.baseline.get(fn, release.candidate[fn])),
        )
        for fn in sorted(release.candidate)
    )
    return ReleaseScope(release.app, release.id, functions, namespace)


def _bare(name: str) -> str:
    """A Lambda function's bare name, from a name or an ARN."""
    return name.rsplit(":function:", 1)[-1].split(":", 1)[0] if ":function:" in name else name


def _lambda(metric: AlarmMetric, scope: ReleaseScope) -> Attribution:
    dims = metric.dimensions
    resource = dims.get("Resource")
    name = resource.split(":", 1)[0] if resource else dims.get("FunctionName")
    if not name:
        return Attribution(
            Blame.SHARED, f"account-wide: {metric.label()} names no function, so no version"
        )
    name = _bare(name)
    qualifier = resource.split(":", 1)[1] if resource and ":" in resource else None
    mine = [
        f
        for f in scope.functions
        if any(r is not None and r.name == name for r in (f.candidate_lambda, f.baseline_lambda))
    ]
    if not mine:
        return Attribution(
            Blame.SHARED,
            f"{metric.label()} names Lambda function {name}, which runs no version of"
            f" release {scope.release}",
        )
    for dim, value in (("ExecutedVersion", dims.get("ExecutedVersion")), ("Resource", qualifier)):
        if value is None:
            continue
        shown = f"{dim}={dims[dim]}"
        for f in mine:
            for ref, version, blame in (
                (f.candidate_lambda, f.candidate, Blame.CANDIDATE),
                (f.baseline_lambda, f.baseline, Blame.STABLE),
            ):
                if ref is None or ref.name != name or ref.qualifier != value:
                    continue
                if not f.changed:
                    return Attribution(
                        Blame.SHARED,
                        f"{shown} is {f.function} {version}, which this release does not change:"
                        " it runs in both channels",
                    )
                role = "candidate" if blame is Blame.CANDIDATE else "baseline (stable)"
                return Attribution(
                    blame,
                    f"{shown} is the {role} of {f.function}, {version} (Lambda {name}:{value})",
                )
        if dim == "ExecutedVersion" or value.isdigit() or value == "$LATEST":
            return Attribution(
                Blame.SHARED,
                f"{shown} is Lambda version {value} of {name}, neither the candidate nor the"
                " baseline of this release",
            )
        return Attribution(
            Blame.SHARED,
            f"alias-wide: {shown} counts every version behind alias {value},"
            " the canary's and stable's together",
        )
    return Attribution(
        Blame.SHARED,
        f"function-wide: FunctionName={name} counts every version of the function,"
        " the canary's and stable's together",
    )


def _emf(metric: AlarmMetric, scope: ReleaseScope) -> Attribution:
    dims = metric.dimensions
    app = dims.get("app")
    if app is not None and app != scope.app:
        return Attribution(Blame.SHARED, f"app={app} is another app than {scope.app}")
    channel = dims.get("channel")
    if channel in ("canary", "stable"):
        blame = Blame.CANDIDATE if channel == "canary" else Blame.STABLE
        return Attribution(
            blame, f"channel={channel} is the {channel} cohort of release {scope.release}"
        )
    fn, version = dims.get("function"), dims.get("version")
    for f in scope.functions:
        if f.function != fn or version not in (f.candidate, f.baseline):
            continue
        if not f.changed:
            return Attribution(
                Blame.SHARED,
                f"version={version} of {fn} is not changed by this release: it runs in both"
                " channels",
            )
        if version == f.candidate:
            return Attribution(Blame.CANDIDATE, f"version={version} is the candidate of {fn}")
        return Attribution(Blame.STABLE, f"version={version} is the baseline (stable) of {fn}")
    what = f"function={fn}" if fn else f"app={app}" if app else "its dimensions"
    return Attribution(
        Blame.SHARED, f"{what} counts the canary's and stable's calls together ({metric.label()})"
    )


def attribute_metric(metric: AlarmMetric, scope: ReleaseScope) -> Attribution:
    """Whom one metric blames (see the module docstring)."""
    if metric.namespace == LAMBDA_NAMESPACE:
        return _lambda(metric, scope)
    if metric.namespace == scope.namespace:
        return _emf(metric, scope)
    return Attribution(
        Blame.SHARED, f"{metric.label()} names no version of release {scope.release}"
    )


def attribute(metrics: Sequence[AlarmMetric], scope: ReleaseScope) -> Attribution:
    """Whom an alarm watching ``metrics`` blames: the candidate when some metric names it and
    none names stable; stable the other way round; else shared."""
    if not metrics:
        return Attribution(
            Blame.SHARED,
            "no metric dimensions to attribute by (a composite alarm, or a query expression)",
        )
    each = [attribute_metric(m, scope) for m in metrics]
    by = {b: [a for a in each if a.blame is b] for b in Blame}
    candidate, stable, shared = by[Blame.CANDIDATE], by[Blame.STABLE], by[Blame.SHARED]
    if candidate and stable:
        return Attribution(
            Blame.SHARED,
            f"it watches the candidate ({_join(candidate)}) and stable ({_join(stable)})"
            " together: comparing them is the judge's",
        )
    if candidate:
        return Attribution(
            Blame.CANDIDATE, f"its dimensions name the candidate: {_join(candidate)}"
        )
    if stable:
        return Attribution(Blame.STABLE, f"its dimensions name stable: {_join(stable)}")
    return Attribution(Blame.SHARED, _join(shared))


def _join(found: Sequence[Attribution]) -> str:
    reasons = list(dict.fromkeys(a.reason for a in found))
    return "; ".join(reasons)
