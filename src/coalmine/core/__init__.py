"""The pure core of coalmine: model, bucketing, strategies, routing, context codec.

Nothing in this package does I/O or imports another layer of coalmine; every
other layer trusts it. Public names are re-exported here.
"""

from coalmine.core.bucketing import BUCKETS, bucket, new_salt
from coalmine.core.context import (
    BAGGAGE_KEY,
    RoutingContext,
    decode_context,
    encode_context,
    find_in_baggage,
    set_in_baggage,
)
from coalmine.core.errors import CoalmineError, InvalidInput
from coalmine.core.model import (
    App,
    Channel,
    Decision,
    Function,
    Phase,
    Reason,
    Release,
    RouteMode,
    Target,
    Targeting,
    TargetKind,
    Version,
)
from coalmine.core.override import Override, decode_override, issue_override
from coalmine.core.routing import RoutingState, decide, evaluate
from coalmine.core.signing import Keyring, Rejected, RejectKind
from coalmine.core.strategy import PRESETS, Step, Strategy, StrategyError, parse_strategy

__all__ = [
    "BAGGAGE_KEY",
    "BUCKETS",
    "PRESETS",
    "App",
    "Channel",
    "CoalmineError",
    "Decision",
    "Function",
    "InvalidInput",
    "Keyring",
    "Override",
    "Phase",
    "Reason",
    "RejectKind",
    "Rejected",
    "Release",
    "RouteMode",
    "RoutingContext",
    "RoutingState",
    "Step",
    "Strategy",
    "StrategyError",
    "Target",
    "TargetKind",
    "Targeting",
    "Version",
    "bucket",
    "decide",
    "decode_context",
    "decode_override",
    "encode_context",
    "evaluate",
    "find_in_baggage",
    "issue_override",
    "new_salt",
    "parse_strategy",
    "set_in_baggage",
]
