"""``Globals.Function`` merged into a function's properties, by SAM's own rules.

The rules of SAM's translator (``samtranslator/plugins/globals``), applied to
the template before any intrinsic is resolved, as SAM applies them:

* two mappings merge key by key, recursively, the function's value winning;
* two lists are concatenated, the global items first (``Alarms`` in a
  function's ``DeploymentPreference`` adds to the global ones);
* anything else, and two values of different kinds, take the function's
  value. An intrinsic function counts as a scalar: a function's
  ``DeploymentPreference: !If [...]`` replaces the global one whole.

Mappings and lists are copied, never changed in place; the template's own
values are kept (not copied), so they still know their place in the template.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coalmine.integrations.sam.intrinsics import is_intrinsic

__all__ = ["merge_globals"]


def _kind(value: object) -> str:
    if isinstance(value, dict) and not is_intrinsic(value):
        return "mapping"
    return "list" if isinstance(value, list) else "scalar"


def _merge(global_value: Any, local_value: Any) -> Any:
    kind = _kind(global_value)
    if kind != _kind(local_value) or kind == "scalar":
        return local_value
    if kind == "list":
        return [*global_value, *local_value]
    merged = dict(global_value)
    for key, value in local_value.items():
        merged[key] = _merge(merged[key], value) if key in merged else value
    return merged


def merge_globals(globals_: Mapping[str, Any], properties: Mapping[str, Any]) -> dict[str, Any]:
    """A function's properties with ``Globals.Function`` merged in (SAM's rules)."""
    merged = _merge(dict(globals_), dict(properties))
    assert isinstance(merged, dict)
    return merged
