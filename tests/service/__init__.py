"""Tests of the control service, on SQLite and on PostgreSQL.

Shared helpers live here (not fixtures: each test module declares its own
small fixture on top of `open_env`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select

from coalmine.controller.plane import ControlPlane
from coalmine.controller.schemas import AppSpec, FunctionSpec, ReleaseSettings
from coalmine.store.changes import ChangeFeed
from coalmine.store.db import Store, open_store
from coalmine.store.models import AppRow, EventRow, FunctionRow, ReleaseRow, VersionRow
from tests import helpers

APP = "shop"
ACTOR = "alice@example.com"
T0 = 1_000.0
STRATEGY = "10%:1m, 50%:2m, 100%"
"""three steps: 10% for 60 s, 50% for 120 s, 100%"""


class FakeClock(helpers.FakeClock):
    """The shared hand-moved clock (`tests.helpers.FakeClock`), starting at this package's T0."""

    def __init__(self, now: float = T0) -> None:
        super().__init__(now)


@dataclass
class Env:
    store: Store
    feed: ChangeFeed
    clock: FakeClock
    svc: ControlPlane


@contextmanager
def open_env(url: str) -> Iterator[Env]:
    """A migrated store, its change feed and a service on a fake clock; disposed after."""
    store = open_store(url)
    feed = ChangeFeed(store)
    clock = FakeClock()
    try:
        yield Env(store, feed, clock, ControlPlane(store, feed, clock=clock))
    finally:
        feed.stop()
        store.dispose()


def shop_spec(**release: object) -> AppSpec:
    """cart and pay run v1 (v2, v3 registered); notify has versions but no current one."""
    return AppSpec.model_validate(
        {
            "app": APP,
            "functions": {
                "cart": FunctionSpec(
                    versions={
                        "v1": "shop.cart:handler",
                        "v2": "https://cart-v2.example.com/invoke",
                        "v3": "arn:aws:lambda:eu-west-1:123456789012:function:cart:3",
                    },
                    current="v1",
                ),
                "pay": FunctionSpec(
                    versions={"v1": "shop.pay:handler", "v2": "shop.pay:handler_v2"},
                    current="v1",
                ),
                "notify": FunctionSpec(versions={"v1": "shop.notify:handler"}),
            },
            "release": ReleaseSettings.model_validate({"strategy": STRATEGY, **release}),
        }
    )


def seed(env: Env) -> None:
    env.svc.catalog.apply(shop_spec(), ACTOR)


TABLES = {
    "apps": AppRow,
    "functions": FunctionRow,
    "versions": VersionRow,
    "releases": ReleaseRow,
    "events": EventRow,
}


def row_counts(store: Store) -> dict[str, int]:
    with store.transaction() as s:
        return {
            name: s.scalar(select(func.count()).select_from(model)) or 0
            for name, model in TABLES.items()
        }


SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
"""For tests of pure service logic: run them on SQLite only, to keep the suite fast."""

POSTGRES_ONLY = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
"""For tests that interleave two transactions: only PostgreSQL runs them side by side
(SQLite transactions are ``BEGIN IMMEDIATE``: the second waits for the first to end)."""
