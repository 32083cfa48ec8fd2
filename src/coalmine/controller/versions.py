"""Registering a version inside a unit of work, and a function's Lambda function.

The one place that keeps versions immutable and writes the
``version_registered`` event: the catalog (``register_version``, ``apply``)
and the releases (a ``latest-published`` candidate) both register through
`register`. `lambda_function_of` says which Lambda function a coalmine
function's versions are published versions of (it is not stored: it is
read off their targets).
"""

from __future__ import annotations

from collections.abc import Sequence

from coalmine.controller.schemas import LATEST_PUBLISHED
from coalmine.core.errors import Conflict, InvalidInput
from coalmine.core.forwarding import lambda_ref
from coalmine.core.model import Target, validate_version_name
from coalmine.store.models import AppRow, FunctionRow, VersionRow
from coalmine.store.uow import Work

__all__ = ["check_version_name", "lambda_function_of", "register"]


def check_version_name(name: str) -> str:
    """A name a version may be registered under (InvalidInput saying why not)."""
    validate_version_name(name)
    if name == LATEST_PUBLISHED:
        raise InvalidInput(
            f"version name {LATEST_PUBLISHED!r} is reserved: a release's candidate uses it"
            " to ask for the newest published Lambda version; register under another name"
        )
    return name


def register(
    w: Work, app: AppRow, fn: FunctionRow, name: str, target: Target, actor: str
) -> VersionRow:
    """Add version ``name`` of ``fn`` with ``target``, its audit event, and mark the app
    changed; `Conflict` when the name is taken (versions are immutable)."""
    existing = w.apps.version(fn, name)
    if existing is not None:
        if existing.target == target.ref:
            raise Conflict(f"version {name} of {fn.name} is already registered")
        raise Conflict(
            f"version {name} of {fn.name} is registered with target {existing.target!r};"
            " versions are immutable: register the new build under a new version name"
        )
    row = w.apps.add_version(
        VersionRow(function_id=fn.id, name=name, target=target.ref, created_at=w.clock())
    )
    w.event(
        app,
        actor,
        "version_registered",
        f"{fn.name} {name} -> {target.ref}",
        data={"function": fn.name, "version": name, "target": target.ref},
    )
    w.changed(app)
    return row


def lambda_function_of(fn: FunctionRow, versions: Sequence[VersionRow]) -> str:
    """The Lambda function (unqualified ARN, or name) ``fn``'s versions were published from.

    Read off the current version's target when it is a Lambda version, else
    off the newest registered Lambda version's; InvalidInput when no version
    of ``fn`` is a Lambda version.
    """
    lambdas = {v.name: ref for v in versions if (ref := lambda_ref(v.target)) is not None}
    if fn.current_version in lambdas:
        return lambdas[fn.current_version].function_name
    newest = max(
        (v for v in versions if v.name in lambdas), key=lambda v: v.created_at, default=None
    )
    if newest is None:
        raise InvalidInput(
            f"function {fn.name} has no Lambda version, so {LATEST_PUBLISHED!r} has no Lambda"
            " function to look at: register its published versions first (versions: published"
            " and lambda_function: in coalmine.yaml), or name the candidate version"
        )
    return lambdas[newest.name].function_name
