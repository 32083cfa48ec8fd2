"""The routing snapshot's wire form: to_dict / from_dict round-trip, errors, ETag."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from coalmine.core import (
    InvalidInput,
    Phase,
    Release,
    RouteMode,
    RoutingState,
    Targeting,
    decide,
    parse_strategy,
)
from coalmine.core.snapshot import RoutingSnapshot

APP = "shop"
CURRENT = {"cart": "v1", "pay": "v1"}
TARGETS = {"pay": {"v1": "shop.pay:handler"}, "cart": {"v1": "m:h", "v2": "https://c.example/v2"}}
USERS = [f"user-{i}" for i in range(500)] + ["tester", "ceo"]


def release(**changes: Any) -> Release:
    fields: dict[str, Any] = {
        "id": "shop-4",
        "app": APP,
        "baseline": CURRENT,
        "candidate": {"cart": "v2", "pay": "v1"},
        "salt": "a1b2c3",
        "strategy": parse_strategy("Linear10PercentEvery1Minute"),
        "route_mode": RouteMode.USER,
        "exposure": 3000,
        "phase": Phase.RUNNING,
        "targeting": Targeting(frozenset({"tester"}), frozenset({"ceo"})),
    }
    fields.update(changes)
    return Release(**fields)


def snapshot(rel: Release | None = None, revision: int = 7) -> RoutingSnapshot:
    rolled_back = {"shop-1": {"cart": "v0", "pay": "v1"}, "shop-3": {"cart": "v1", "pay": "v0"}}
    return RoutingSnapshot(RoutingState(APP, CURRENT, rel, rolled_back), revision, TARGETS)


@pytest.mark.parametrize(
    "snap",
    [
        snapshot(None, 0),
        snapshot(release()),
        snapshot(release(phase=Phase.ROLLED_BACK, exposure=0)),
        snapshot(release(phase=Phase.PROMOTED, exposure=10000)),
        snapshot(release(route_mode=RouteMode.REQUEST, targeting=Targeting())),
        snapshot(release(strategy=parse_strategy("5%:30s, 20%:2m, 100%"), phase=Phase.PAUSED)),
    ],
    ids=["no-release", "running", "rolled-back", "promoted", "request-mode", "custom-paused"],
)
def test_round_trip_through_json(snap: RoutingSnapshot) -> None:
    wire = json.loads(json.dumps(snap.to_dict()))  # the wire form is plain JSON
    back = RoutingSnapshot.from_dict(wire)
    assert back.to_dict() == snap.to_dict()
    assert back.revision == snap.revision
    assert back.etag == snap.etag
    assert back.app == APP
    assert {fn: dict(v) for fn, v in back.targets.items()} == TARGETS
    assert {k: dict(v) for k, v in back.state.rolled_back.items()} == dict(snap.state.rolled_back)
    if snap.state.release is None:
        assert back.state.release is None
    else:
        assert back.state.release is not None
        assert back.state.release.strategy == snap.state.release.strategy
        assert back.state.release.targeting == snap.state.release.targeting
        assert back.state.release.phase is snap.state.release.phase
    # the point of it all: the data plane decides exactly as the control plane would
    if snap.state.release is None or snap.state.release.route_mode is RouteMode.USER:
        for user in USERS:
            assert decide(back.state, user) == decide(snap.state, user)


def test_to_dict_is_deterministic_and_complete() -> None:
    data = snapshot(release()).to_dict()
    assert list(data["targets"]) == ["cart", "pay"]  # sorted
    assert data["versions"] == CURRENT
    assert data["revision"] == 7
    assert data["release"]["targeting"] == {"always_canary": ["tester"], "never_canary": ["ceo"]}
    assert data["release"]["phase"] == "running"
    assert data["release"]["route_mode"] == "user"
    assert data["release"]["strategy"]["name"] == "Linear10PercentEvery1Minute"
    assert data["rolled_back"]["shop-1"] == {"cart": "v0", "pay": "v1"}
    assert snapshot(None).to_dict()["release"] is None


def test_from_dict_defaults() -> None:
    snap = RoutingSnapshot.from_dict({"app": APP})
    assert snap.revision == 0
    assert dict(snap.state.versions) == {}
    assert snap.state.release is None
    assert dict(snap.state.rolled_back) == {}
    assert snap.targets == {}
    minimal = copy.deepcopy(snapshot(release()).to_dict())
    del minimal["release"]["route_mode"]
    del minimal["release"]["targeting"]
    rel = RoutingSnapshot.from_dict(minimal).state.release
    assert rel is not None
    assert rel.route_mode is RouteMode.USER
    assert rel.targeting == Targeting()


def test_etag_and_targets() -> None:
    snap = snapshot(release(), revision=41)
    assert snap.etag == '"shop-41"'
    assert snapshot(release(), revision=42).etag != snap.etag
    assert snap.target_of("cart", "v2") == "https://c.example/v2"
    assert snap.target_of("cart", "v9") is None
    assert snap.target_of("search", "v1") is None


Mutation = Callable[[dict[str, Any]], object]


def good() -> dict[str, Any]:
    return snapshot(release()).to_dict()


def rel_set(key: str, value: object) -> Mutation:
    return lambda d: d["release"].__setitem__(key, value)


def rel_del(key: str) -> Mutation:
    return lambda d: d["release"].pop(key)


def top_set(key: str, value: object) -> Mutation:
    return lambda d: d.__setitem__(key, value)


# (what is wrong, how to break a good snapshot, what the message must name)
NAMED_ERRORS: list[tuple[str, Mutation, str]] = [
    ("no app", lambda d: d.pop("app"), "'app'"),
    ("bad app name", top_set("app", "Shop!"), "invalid app name 'Shop!'"),
    ("revision text", top_set("revision", "7"), "revision must be an integer"),
    ("revision bool", top_set("revision", True), "revision must be an integer"),
    ("revision float", top_set("revision", 7.5), "revision must be an integer"),
    ("targets list", top_set("targets", ["m:h"]), "targets must be a mapping"),
    ("versions list", top_set("versions", ["cart"]), "versions must be a mapping"),
    ("bad function", top_set("versions", {"Cart": "v1"}), "invalid function name 'Cart'"),
    ("bad version", top_set("versions", {"cart": "-v"}), "invalid version name '-v'"),
    ("no release id", rel_del("id"), "'id'"),
    ("bad release id", rel_set("id", "shop 4"), "invalid release id 'shop 4'"),
    ("no salt", rel_del("salt"), "'salt'"),
    ("bad salt", rel_set("salt", "a b"), "invalid salt 'a b'"),
    ("no strategy", rel_del("strategy"), "'strategy'"),
    ("empty strategy", rel_set("strategy", {"steps": []}), "at least one step"),
    ("bad phase", rel_set("phase", "done"), "'done' is not a valid Phase"),
    ("bad route mode", rel_set("route_mode", "random"), "'random' is not a valid RouteMode"),
    ("exposure too big", rel_set("exposure", 20000), "invalid exposure 20000"),
    ("exposure text", rel_set("exposure", "10"), "invalid exposure '10'"),
    ("no baseline", rel_del("baseline"), "'baseline'"),
    ("baseline list", rel_set("baseline", ["cart"]), "baseline must be a mapping"),
    ("candidate list", rel_set("candidate", ["cart"]), "candidate must be a mapping"),
    ("functions differ", rel_set("baseline", {"cart": "v1"}), "differing: pay"),
    ("nothing changes", rel_set("candidate", dict(CURRENT)), "nothing to release"),
    (
        "targeted twice",
        rel_set("targeting", {"always_canary": ["u"], "never_canary": ["u"]}),
        "both always-canary and never-canary: u",
    ),
    ("empty user key", rel_set("targeting", {"always_canary": [""]}), "non-empty strings"),
]


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [(m, p) for _, m, p in NAMED_ERRORS],
    ids=[what for what, _, _ in NAMED_ERRORS],
)
def test_from_dict_errors_name_the_problem(mutate: Mutation, problem: str) -> None:
    data = good()
    mutate(data)
    with pytest.raises(InvalidInput) as info:
        RoutingSnapshot.from_dict(data)
    assert problem in str(info.value)


# Shapes that are refused (InvalidInput, never a bare TypeError/AttributeError) but whose
# message does not yet name the field: core/snapshot.py lets the Python error through.
UNNAMED_ERRORS: list[tuple[str, object, str]] = [
    ("release text", {**good(), "release": "shop-4"}, "release"),
    ("targets entry text", {**good(), "targets": {"cart": "m:h"}}, "targets"),
    ("rolled_back list", {**good(), "rolled_back": ["shop-1"]}, "rolled_back"),
    ("rolled_back entry text", {**good(), "rolled_back": {"shop-1": "v1"}}, "rolled_back"),
    (
        "targeting text",
        {**good(), "release": {**good()["release"], "targeting": "u"}},
        "targeting",
    ),
]


@pytest.mark.parametrize(
    ("data", "field"),
    [(d, f) for _, d, f in UNNAMED_ERRORS],
    ids=[what for what, _, _ in UNNAMED_ERRORS],
)
def test_from_dict_refuses_bad_shapes_as_invalid_input(data: Any, field: str) -> None:
    with pytest.raises(InvalidInput):
        RoutingSnapshot.from_dict(data)


@pytest.mark.parametrize("data", [["app", "shop"], None, "shop", 7])
def test_from_dict_refuses_a_document_that_is_not_an_object(data: Any) -> None:
    with pytest.raises(InvalidInput, match=r"^invalid routing snapshot: "):
        RoutingSnapshot.from_dict(data)


@pytest.mark.parametrize(
    ("data", "field"),
    [(d, f) for _, d, f in UNNAMED_ERRORS],
    ids=[what for what, _, _ in UNNAMED_ERRORS],
)
def test_from_dict_should_name_the_field_of_bad_shapes(data: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        RoutingSnapshot.from_dict(data)
    assert field in str(info.value)
