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
    def from_dict(cls, data: object) -> RoutingSnapshot:
        """Read a snapshot; raise InvalidInput naming the first bad field."""
        doc = _mapping(data, "the document")
        try:
            app = doc["app"]
        except KeyError:
            raise InvalidInput("invalid routing snapshot: missing 'app'") from None
        release = None
        rel_data = doc.get("release")
        if rel_data is not None:
            rel = _mapping(rel_data, "release")
            targeting = _mapping(rel.get("targeting") or {}, "release.targeting")
            try:
                release = Release(
                    id=rel["id"],
                    app=app,
                    baseline=_mapping(rel["baseline"], "release.baseline"),
                    candidate=_mapping(rel["candidate"], "release.candidate"),
                    salt=rel["salt"],
                    strategy=parse_strategy(rel["strategy"]),
                    route_mode=RouteMode(rel.get("route_mode", "user")),
                    exposure=rel["exposure"],
                    phase=rel["phase"],
                    targeting=Targeting(
                        frozenset(_strings(targeting.get("always_canary", ()), "always_canary")),
                        frozenset(_strings(targeting.get("never_canary", ()), "never_canary")),
                    ),
                )
            except KeyError as exc:
                raise InvalidInput(f"invalid routing snapshot: release misses {exc}") from None
            except InvalidInput:
                raise
            except ValueError as exc:
                raise InvalidInput(f"invalid routing snapshot: release: {exc}") from None
        rolled_back = {
            str(rid): _mapping(versions, f"rolled_back[{rid!r}]")
            for rid, versions in _mapping(doc.get("rolled_back") or {}, "rolled_back").items()
        }
        targets = {
            str(fn): {str(k): str(v) for k, v in _mapping(refs, f"targets[{fn!r}]").items()}
            for fn, refs in _mapping(doc.get("targets") or {}, "targets").items()
        }
        revision = doc.get("revision", 0)
        if isinstance(revision, bool) or not isinstance(revision, int):
            raise InvalidInput("invalid routing snapshot: revision must be an integer")
        try:
            state = RoutingState(
                app=app,
                versions=_mapping(doc.get("versions") or {}, "versions"),
                release=release,
                rolled_back=rolled_back,
            )
        except InvalidInput:
            raise
        except ValueError as exc:
            raise InvalidInput(f"invalid routing snapshot: {exc}") from None
        return cls(state, revision, targets)


def _mapping(value: object, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidInput(
            f"invalid routing snapshot: {field} must be a mapping (a JSON object),"
            f" not {type(value).__name__}"
        )
    return value


def _strings(value: object, field: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, list | tuple | set | frozenset):
        raise InvalidInput(f"invalid routing snapshot: targeting.{field} must be a list of keys")
    return [str(v) for v in value]
