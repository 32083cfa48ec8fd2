"""Instrumentation: inside a scope, outgoing httpx and requests calls carry the context."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import httpx
import pytest

from coalmine.core.model import Channel, Decision, Reason
from coalmine.sdk import instrument_httpx, is_instrumented, uninstrument_httpx, use
from tests.sdk import HeaderRecorder

TOKEN = "1.k1.eyJhIjoic2hvcCJ9.AAAAAAAAAAAAAAAAAAAAAA"
OTHER = "1.k1.b3RoZXI.BBBBBBBBBBBBBBBBBBBBBB"
DECISION = Decision("shop", "shop-1", Channel.CANARY, {"api": "v2"}, Reason.COHORT)
HAS_REQUESTS = importlib.util.find_spec("requests") is not None


@pytest.fixture
def server() -> Iterator[HeaderRecorder]:
    with HeaderRecorder() as recorder:
        yield recorder


@pytest.fixture
def instrumented() -> Iterator[None]:
    was = is_instrumented()
    instrument_httpx()
    yield
    if not was:
        uninstrument_httpx()


@pytest.mark.usefixtures("instrumented")
def test_httpx_calls_carry_the_context_only_inside_a_scope(server: HeaderRecorder) -> None:
    with httpx.Client() as http:
        http.get(server.url)
        assert server.last() is None  # outside a scope nothing is added
        with use(DECISION, TOKEN):
            http.get(server.url)
            assert server.last() == [f"coalmine={TOKEN}"]
            http.get(server.url, headers={"baggage": "userId=alice,tier=gold"})
            assert server.last() == [f"userId=alice,tier=gold,coalmine={TOKEN}"]
            # an explicit coalmine member is not overridden
            http.get(server.url, headers={"Baggage": f"coalmine={OTHER},a=1"})
            assert server.last() == [f"coalmine={OTHER},a=1"]
        with use(DECISION, None):  # a decision with nothing to propagate
            http.get(server.url)
            assert server.last() is None
        http.get(server.url)
        assert server.last() is None


@pytest.mark.usefixtures("instrumented")
async def test_async_httpx_calls_carry_the_context(server: HeaderRecorder) -> None:
    async with httpx.AsyncClient() as http:
        with use(DECISION, TOKEN):
            await http.get(server.url, headers={"baggage": "a=1"})
        assert server.last() == [f"a=1,coalmine={TOKEN}"]
        await http.get(server.url)
        assert server.last() is None


@pytest.mark.skipif(not HAS_REQUESTS, reason="requests is not installed (it is optional)")
@pytest.mark.usefixtures("instrumented")
def test_requests_calls_carry_the_context(server: HeaderRecorder) -> None:
    import requests

    with requests.Session() as session:
        with use(DECISION, TOKEN):
            session.get(server.url, headers={"baggage": "a=1"}, timeout=5)
        assert server.last() == [f"a=1,coalmine={TOKEN}"]
        session.get(server.url, timeout=5)
        assert server.last() is None


def test_instrumenting_is_idempotent_and_reversible(server: HeaderRecorder) -> None:
    was = is_instrumented()
    try:
        uninstrument_httpx()
        bare = httpx.Client.__dict__["send"]
        assert not hasattr(bare, "__coalmine_original__")
        instrument_httpx()
        once = httpx.Client.__dict__["send"]
        instrument_httpx()
        assert httpx.Client.__dict__["send"] is once
        assert is_instrumented()
        uninstrument_httpx()
        uninstrument_httpx()
        assert httpx.Client.__dict__["send"] is bare
        assert not is_instrumented()
        with use(DECISION, TOKEN), httpx.Client() as http:
            http.get(server.url)
        assert server.last() is None
    finally:
        if was:
            instrument_httpx()
    assert is_instrumented() == was
