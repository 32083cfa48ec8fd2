"""The routing decision of the work in progress, held in a context variable.

`use(decision, token)` makes a decision current for a block; everything that
propagates the context (`coalmine.sdk.carriers`, the httpx and requests
instrumentation, `envelope.wrap`) reads the token from here by default. A
context variable follows asyncio tasks (each copies the context at creation)
and threads started with ``contextvars.copy_context().run``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from coalmine.core.model import Decision

__all__ = ["Scope", "current_decision", "current_scope", "current_token", "use"]


@dataclass(frozen=True, slots=True)
class Scope:
    """A decision and its signed context (None when there is nothing to propagate)."""

    decision: Decision
    token: str | None


_current: ContextVar[Scope | None] = ContextVar("coalmine_scope", default=None)


def current_scope() -> Scope | None:
    return _current.get()


def current_decision() -> Decision | None:
    """The decision made current by the innermost `use`, if any."""
    scope = _current.get()
    return scope.decision if scope is not None else None


def current_token() -> str | None:
    """The signed routing context to propagate from here, if any."""
    scope = _current.get()
    return scope.token if scope is not None else None


@contextmanager
def use(decision: Decision, token: str | None) -> Iterator[Decision]:
    """Make ``decision`` (and its signed ``token``) current inside the block."""
    reset = _current.set(Scope(decision, token))
    try:
        yield decision
    finally:
        _current.reset(reset)
