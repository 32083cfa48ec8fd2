"""Functions' deployment preferences made into one release for the app, and why.

SAM gives each function its own ``DeploymentPreference``; coalmine releases
an app as one: one strategy, one set of alarms, one hook of each kind, one
alias. Where the functions disagree, the choice follows fixed rules, and each
choice is told as a note:

* strategy: the most cautious wins. `caution` orders strategies: fewest users
  in the first step, then the longest first step, then the longest release,
  then the name (so the choice never depends on the template's order);
* alarms: all of them (any one in ALARM rolls the whole app back), each once;
* hooks: the winning function's, else the first function's in the template
  that has one; the others are named as left out;
* alias: the one most functions use; a tie goes to the first in the template.

Also here: the strategy of a CodeDeploy ``DeploymentConfig`` resource
(``TimeBasedCanary``, ``TimeBasedLinear``, ``AllAtOnce``) for a ``Type`` that
names one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from coalmine.core.strategy import Strategy, StrategyError, format_duration, parse_strategy
from coalmine.integrations.sam.intrinsics import text_of

__all__ = [
    "HOOK_SLOTS",
    "FunctionPreference",
    "caution",
    "choose_alias",
    "choose_hooks",
    "choose_strategy",
    "collect_alarms",
    "deployment_config_strategy",
]

HOOK_SLOTS: Mapping[str, str] = {
    "PreTraffic": "before_allow_traffic",
    "PostTraffic": "after_allow_traffic",
}
"""SAM's hook name -> coalmine's (CodeDeploy's lifecycle events)"""


@dataclass(frozen=True, slots=True)
class FunctionPreference:
    """What one imported function asks of a release, read from its merged properties."""

    function: str
    """the coalmine function's name"""
    alias: str | None = None
    strategy: Strategy | None = None
    """None when its Type could not be read: it takes no part in the choice"""
    strategy_label: str = ""
    """how the strategy is named in notes, e.g. ``AllAtOnce (no DeploymentPreference)``"""
    alarms: tuple[str, ...] = ()
    hooks: Mapping[str, str] = field(default_factory=dict)
    """coalmine hook name -> the Lambda function to invoke"""


def caution(strategy: Strategy) -> tuple[int, float, float, str]:
    """The sort key of the rule: the smallest is the most cautious strategy."""
    first = strategy.steps[0]
    return (first.exposure, -first.hold, -strategy.total_duration, strategy.name)


def _pct(bp: int) -> str:
    return f"{bp / 100:g}%"


def choose_strategy(prefs: Sequence[FunctionPreference]) -> tuple[Strategy | None, list[str]]:
    """The release's strategy and the notes that explain it."""
    strategies = [(p, p.strategy) for p in prefs if p.strategy is not None]
    if not strategies:
        return None, [
            "no function's DeploymentPreference.Type could be read: the release keeps coalmine's"
            " default strategy (Canary10Percent5Minutes); set release.strategy to choose"
        ]
    strategy = min((s for _, s in strategies), key=caution)
    if len({(s.name, s.steps) for _, s in strategies}) == 1:
        return strategy, []
    listing = ", ".join(f"{p.function}: {p.strategy_label}" for p, _ in strategies)
    first = strategy.steps[0]
    return strategy, [
        f"functions disagree on DeploymentPreference.Type ({listing}); the app is released"
        f" as one: {strategy.name} wins as the most cautious, its first step exposing"
        f" {_pct(first.exposure)} of users for {format_duration(first.hold)}"
        " (rule: fewest users in the first step, then the longest first step, then the"
        " longest release)"
    ]


def collect_alarms(prefs: Sequence[FunctionPreference]) -> tuple[list[str], list[str]]:
    """Every function's alarms, each once in the order met; a note when they differ."""
    alarms = list(dict.fromkeys(a for p in prefs for a in p.alarms))
    if len({frozenset(p.alarms) for p in prefs}) <= 1:
        return alarms, []
    listing = "; ".join(f"{p.function}: {', '.join(p.alarms) or 'none'}" for p in prefs)
    return alarms, [
        f"functions disagree on DeploymentPreference.Alarms ({listing}); the release watches"
        f" every one of them ({', '.join(alarms)}): any one in ALARM rolls the whole app back"
    ]


def choose_hooks(
    prefs: Sequence[FunctionPreference], winner: str | None
) -> tuple[dict[str, str], list[str]]:
    """One hook of each kind: the winning function's, else the first one's that has one."""
    hooks: dict[str, str] = {}
    notes: list[str] = []
    ordered = sorted(prefs, key=lambda p: p.function != winner)  # stable: the winner first
    for sam_name, slot in HOOK_SLOTS.items():
        having = [p for p in ordered if slot in p.hooks]
        if not having:
            continue
        chosen = having[0]
        hooks[slot] = chosen.hooks[slot]
        if len(having) == len(prefs) and len({p.hooks[slot] for p in having}) == 1:
            continue
        others = [p for p in prefs if p.hooks.get(slot) != hooks[slot]]
        listing = ", ".join(f"{p.function}: {p.hooks.get(slot, 'none')}" for p in others)
        why = (
            "the function whose strategy won"
            if chosen.function == winner
            else "the first function in the template with one"
        )
        notes.append(
            f"functions disagree on Hooks.{sam_name} ({listing}); coalmine runs one {slot} hook"
            f" for the app's release: {hooks[slot]}, of {chosen.function} ({why});"
            " combine their checks into that function if each one matters"
        )
    return hooks, notes


def choose_alias(prefs: Sequence[FunctionPreference]) -> tuple[str | None, list[str]]:
    """The alias coalmine keeps true for the app: the most used one."""
    aliases = [p.alias for p in prefs if p.alias is not None]
    if not aliases:
        return None, [
            "no function's AutoPublishAlias could be read: release.lambda_alias is left out;"
            " set it to the alias your callers invoke"
        ]
    counts = Counter(aliases)
    top = max(counts.values())
    alias = next(a for a in aliases if counts[a] == top)  # a tie goes to the first
    if len(counts) == 1:
        return alias, []
    listing = "; ".join(
        f"{a}: {', '.join(p.function for p in prefs if p.alias == a)}" for a in counts
    )
    return alias, [
        f"functions disagree on AutoPublishAlias ({listing}); coalmine keeps one alias for the"
        f" app: {alias!r}, the one most functions use (a tie goes to the first in the template)"
    ]


def _whole(value: object, what: str) -> int:
    text = text_of(value)
    if text is None or not text.isdigit():
        raise StrategyError(f"{what} must be a whole number, got {value!r}")
    return int(text)


def deployment_config_strategy(properties: Mapping[str, object]) -> Strategy:
    """The strategy of a CodeDeploy Lambda DeploymentConfig's resolved properties."""
    platform = properties.get("ComputePlatform", "Lambda")
    if platform != "Lambda":
        raise StrategyError(f"its ComputePlatform is {platform!r}, not Lambda")
    routing = properties.get("TrafficRoutingConfig")
    if not isinstance(routing, Mapping):
        raise StrategyError("it has no TrafficRoutingConfig")
    kind = routing.get("Type")
    if kind == "AllAtOnce":
        return parse_strategy("AllAtOnce")
    if kind in ("TimeBasedCanary", "TimeBasedLinear"):
        shape = "Canary" if kind == "TimeBasedCanary" else "Linear"
        spec = routing.get(kind)
        if not isinstance(spec, Mapping):
            raise StrategyError(f"its TrafficRoutingConfig has no {kind}")
        pct = _whole(spec.get(f"{shape}Percentage"), f"{kind}.{shape}Percentage")
        minutes = _whole(spec.get(f"{shape}Interval"), f"{kind}.{shape}Interval")
        unit = "Minute" if minutes == 1 else "Minutes"
        every = "Every" if shape == "Linear" else ""
        return parse_strategy(f"{shape}{pct}Percent{every}{minutes}{unit}")
    raise StrategyError(
        f"its TrafficRoutingConfig.Type is {kind!r}: use TimeBasedCanary, TimeBasedLinear or"
        " AllAtOnce"
    )
