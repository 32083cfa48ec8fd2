"""Unknown query parameters: refused with a 422 that names them, never silently ignored.

A misspelt ``?dry_rnu=true`` used to be ignored and the document applied for
real. Every operation now takes only the query parameters it declares (its
own, its dependencies', and a query API key), like bodies refuse unknown
fields.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import APIKeyQuery

__all__ = ["known_query"]

_DECLARED = "_coalmine_query_names"
"""the attribute that caches a route's declared names (routes are unhashable)"""


def _declared(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    if isinstance(dependant.call, APIKeyQuery):
        names.add(dependant.call.model.name)
    for sub in dependant.dependencies:
        names |= _declared(sub)
    return names


async def known_query(request: Request) -> None:
    """A dependency of every operation: 422 when the query names a parameter it does not take."""
    if not request.scope.get("query_string"):
        return
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    declared: frozenset[str] | None = getattr(route, _DECLARED, None)
    if declared is None:
        declared = frozenset(_declared(route.dependant))
        setattr(route, _DECLARED, declared)
    unknown = sorted(set(request.query_params) - declared)
    if unknown:
        takes = ", ".join(sorted(declared)) or "none"
        raise RequestValidationError(
            [
                {
                    "loc": ("query", name),
                    "msg": f"unknown query parameter (this operation takes: {takes})",
                    "type": "extra_forbidden",
                }
                for name in unknown
            ]
        )
