"""The routing snapshot: what the control plane sends the data plane for one app.

A snapshot is a `RoutingState` plus the target of every version and a
revision (the ETag). `to_dict` / `from_dict` are its JSON wire form, shared
by the control plane's routing endpoint and SSE stream and by every SDK and
gateway that reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from coalmine.core.errors import InvalidInput
from coalmine.core.model import Release, RouteMode, Targeting
from coalmine.core.routing import RoutingState
from coalmine.core.strategy import parse_strategy

__all__ = ["RoutingSnapshot"]


@dataclass(frozen=True)
class RoutingSnapshot:
    state: RoutingState
    revision: int = 0
    targets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """function -> version -> target reference"""

    @property
    def app(self) -> str:
        return self.state.app

    @property
    def etag(self) -> str:
        return f'"{self.app}-{self.revision}"'

    def target_of(self, function: str, version: str) -> str | None:
        return self.targets.get(function, {}).get(version)

    def to_dict(self) -> dict[str, Any]:
        rel = self.state.release
        release: dict[str, Any] | None = None
        if rel is not None:
            release = {
                "id": rel.id,
                "phase": str(rel.phase),
                "route_mode": str(rel.route_mode),
                "salt": rel.salt,
                "exposure": rel.exposure,
                "baseline": dict(rel.baseline),
                "candidate": dict(rel.candidate),
                "targeting": {
                    "always_canary": sorted(rel.targeting.always_canary),
                    "never_canary": sorted(rel.targeting.never_canary),
                },
                "strategy": rel.strategy.to_dict(),
            }
        return {
            "app": self.app,
            "revision": self.revision,
            "versions": dict(self.state.versions),
            "targets": {fn: dict(v) for fn, v in sorted(self.targets.items())},
            "release": release,
            "rolled_back": {k: dict(v) for k, v in self.state.rolled_back.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RoutingSnapshot:
        """Read a snapshot; raise InvalidInput naming the first bad field."""
        try:
            rel_data = data.get("release")
            release = None
            if rel_data is not None:
                targeting = rel_data.get("targeting") or {}
                release = Release(
                    id=rel_data["id"],
                    app=data["app"],
                    baseline=rel_data["baseline"],
                    candidate=rel_data["candidate"],
                    salt=rel_data["salt"],
                    strategy=parse_strategy(rel_data["strategy"]),
                    route_mode=RouteMode(rel_data.get("route_mode", "user")),
                    exposure=rel_data["exposure"],
                    phase=rel_data["phase"],
                    targeting=Targeting(
                        frozenset(targeting.get("always_canary", ())),
                        frozenset(targeting.get("never_canary", ())),
                    ),
                )
            state = RoutingState(
                app=data["app"],
                versions=data.get("versions") or {},
                release=release,
                rolled_back=data.get("rolled_back") or {},
            )
            revision = data.get("revision", 0)
            if isinstance(revision, bool) or not isinstance(revision, int):
                raise InvalidInput("revision must be an integer")
            targets = data.get("targets") or {}
            if not isinstance(targets, Mapping):
                raise InvalidInput("targets must be an object")
            return cls(state, revision, {fn: dict(v) for fn, v in targets.items()})
        except InvalidInput:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidInput(f"invalid routing snapshot: {type(exc).__name__}: {exc}") from exc
