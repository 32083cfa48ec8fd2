"""coalmine: canary releases of serverless functions that route users, not requests.

The base install is what function code needs: the pure core (bucketing,
strategies, routing, the signed routing context) re-exported here, and the
SDK's `Client` (`coalmine.sdk`), imported on first use so that ``import
coalmine`` stays light.
"""

from typing import TYPE_CHECKING, Any

from coalmine.core import (
    BAGGAGE_KEY,
    BUCKETS,
    PRESETS,
    App,
    Channel,
    CoalmineError,
    Decision,
    Function,
    InvalidInput,
    Keyring,
    Override,
    Phase,
    Reason,
    Rejected,
    RejectKind,
    Release,
    RouteMode,
    RoutingContext,
    RoutingState,
    Step,
    Strategy,
    StrategyError,
    Target,
    Targeting,
    TargetKind,
    Version,
    bucket,
    decide,
    decode_context,
    decode_override,
    encode_context,
    evaluate,
    find_in_baggage,
    issue_override,
    new_salt,
    parse_strategy,
    set_in_baggage,
)

if TYPE_CHECKING:
    from coalmine.sdk import Client

__version__ = "0.1.0"

__all__ = [
    "BAGGAGE_KEY",
    "BUCKETS",
    "PRESETS",
    "App",
    "Channel",
    "Client",
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
    "__version__",
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


def __getattr__(name: str) -> Any:
    """Import the SDK's `Client` on first use (the core above is imported eagerly)."""
    if name == "Client":
        from coalmine.sdk import Client

        return Client
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
