"""Fixtures of the controller tests: a fake clock, a real store and service, a local HTTP server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from coalmine.controller.plane import ControlPlane
from coalmine.store.db import Store, open_store
from tests.controller import FakeClock, HttpServer


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    st = open_store(database_url)
    yield st
    st.dispose()


@pytest.fixture
def svc(store: Store, clock: FakeClock) -> ControlPlane:
    return ControlPlane(store, clock=clock)


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    with HttpServer() as server:
        yield server
