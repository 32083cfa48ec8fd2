"""What the SDK reads from a Lambda execution environment: whether it runs in one, and which
coalmine version the running Lambda version is.

Lambda sets ``AWS_LAMBDA_FUNCTION_NAME`` and ``AWS_LAMBDA_FUNCTION_VERSION``
(``$LATEST`` or a published version number, never an alias) in every
execution environment; their presence is how the SDK detects Lambda (and
picks the `LambdaFlusher` and EMF lines) with no setting.

coalmine versions have their own names (``v2``, ``2024-06-01.3``); a
version's *target* says where it runs: a qualified ARN
``arn:aws:lambda:REGION:ACCOUNT:function:NAME:QUALIFIER`` or the short
``lambda:NAME:QUALIFIER``. `running_version` is the reverse lookup: the
coalmine version of a function whose target names this Lambda function and
version. A target naming an alias (``...:live``) cannot match, since Lambda
reports the version number behind the alias; register versions by number for
the lookup to find them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from coalmine.core.errors import InvalidInput
from coalmine.core.forwarding import lambda_ref
from coalmine.core.snapshot import RoutingSnapshot

__all__ = ["LambdaEnvironment", "lambda_qualifier", "running_version"]


@dataclass(frozen=True, slots=True)
class LambdaEnvironment:
    """The Lambda function and version this process runs as."""

    function_name: str
    function_version: str
    region: str | None = None

    @classmethod
    def detect(cls, environ: Mapping[str, str] | None = None) -> LambdaEnvironment | None:
        """The environment's Lambda function, or None outside Lambda."""
        env = os.environ if environ is None else environ
        name = env.get("AWS_LAMBDA_FUNCTION_NAME", "")
        version = env.get("AWS_LAMBDA_FUNCTION_VERSION", "")
        if not name or not version:
            return None
        return cls(name, version, env.get("AWS_REGION") or None)


def lambda_qualifier(target: str) -> tuple[str | None, str, str] | None:
    """(region or None, function name, qualifier) of a Lambda target, else None
    (`coalmine.core.forwarding.lambda_ref`; an unqualified one is not a version)."""
    try:
        ref = lambda_ref(target)
    except InvalidInput:
        return None
    return (ref.region, ref.name, ref.qualifier) if ref is not None else None


def running_version(
    snapshot: RoutingSnapshot | None, function: str, env: LambdaEnvironment | None
) -> str | None:
    """The coalmine version of ``function`` whose target is the running Lambda version, if one is.

    None outside Lambda, without routing yet, or when no target matches (an
    alias target, another function's name): callers then fall back on the
    decision's version.
    """
    if env is None or snapshot is None:
        return None
    for version, target in snapshot.targets.get(function, {}).items():
        parsed = lambda_qualifier(target)
        if parsed is None:
            continue
        region, name, qualifier = parsed
        if (
            name == env.function_name
            and qualifier == env.function_version
            and (region is None or env.region is None or region == env.region)
        ):
            return version
    return None
