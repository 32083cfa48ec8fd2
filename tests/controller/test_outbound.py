"""Outbound calls a deployer chooses (hooks, event webhooks, Prometheus alarms): only to
allowed destinations, checked at connect time; answers read up to a bound and within a
wall-clock deadline; never repeated into events or evaluations."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from coalmine.controller.hooks import MAX_ANSWER, HttpHookRunner
from coalmine.controller.plane import ControlPlane
from coalmine.controller.schemas import HookSpec
from coalmine.controller.webhooks import EventWebhooks
from coalmine.core.alarms import EvaluationState
from coalmine.core.errors import InvalidInput
from coalmine.core.machine import Hook
from coalmine.integrations import outbound
from coalmine.integrations.outbound import OutboundPolicy, set_policy
from coalmine.integrations.prometheus import ANSWER_LIMIT, PrometheusAlarm
from coalmine.store.db import open_store
from tests.controller import HttpServer, start_release
from tests.controller.test_hooks import a_release

METADATA = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"


@pytest.fixture(autouse=True)
def default_policy() -> Iterator[None]:
    yield
    set_policy(OutboundPolicy.default())


def prometheus(url: str, timeout: float = 5.0) -> PrometheusAlarm:
    return PrometheusAlarm.from_spec(
        {"name": "p99", "prometheus": url, "query": "q", "above": 0.5, "timeout": timeout}
    )


def test_the_metadata_address_is_refused_to_every_caller(http_server: HttpServer) -> None:
    with HttpHookRunner(backoff=0.01) as runner:
        outcome = runner.run(
            a_release(), Hook.AFTER_ALLOW_TRAFFIC, HookSpec(url=METADATA, retries=0).config()
        )
    assert not outcome.passed
    assert "refused by the outbound policy" in outcome.detail
    assert "169.254.169.254, a link-local or metadata address" in outcome.detail
    evaluation = prometheus("http://169.254.169.254").evaluate()
    assert evaluation.state is EvaluationState.ERROR
    assert "refused by the outbound policy" in evaluation.detail
    # the controller's own test server on loopback is allowed by default
    url = http_server.route("/ok", 204)
    with HttpHookRunner() as runner:
        assert runner.run(a_release(), Hook.AFTER_ALLOW_TRAFFIC, HookSpec(url=url).config()).passed


def test_outbound_allow_narrows_private_destinations(http_server: HttpServer) -> None:
    url = http_server.route("/ok", 204)
    spec = HookSpec(url=url, retries=0).config()
    set_policy(OutboundPolicy.parse("none"))
    with HttpHookRunner() as runner:
        refused = runner.run(a_release(), Hook.AFTER_ALLOW_TRAFFIC, spec)
        assert not refused.passed
        assert "127.0.0.1, a private address not in --outbound-allow" in refused.detail
        set_policy(OutboundPolicy.parse("10.0.0.0/8, 127.0.0.1/32"))
        assert runner.run(a_release(), Hook.AFTER_ALLOW_TRAFFIC, spec).passed
        set_policy(OutboundPolicy.parse("10.0.0.0/8"))
        assert not runner.run(a_release(), Hook.AFTER_ALLOW_TRAFFIC, spec).passed
    assert len(http_server.at("/ok")) == 1, "a refused destination is never connected to"


def test_a_name_is_checked_each_time_it_is_connected_to(
    http_server: HttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the check is on the address connected to, not an earlier lookup."""
    url = http_server.route("/ok", 204).replace("127.0.0.1", "hooks.example")
    answers = iter(["127.0.0.1", "169.254.169.254"])
    real = outbound.socket.getaddrinfo

    def rebinding(host: str, port: int, *args: object, **kw: object) -> object:
        if host == "hooks.example":
            return real(next(answers), port, *args, **kw)  # type: ignore[arg-type]
        return real(host, port, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(outbound.socket, "getaddrinfo", rebinding)
    spec = HookSpec(url=url, retries=0).config()
    client = httpx.Client(transport=outbound.guarded_transport(), headers={"connection": "close"})
    with HttpHookRunner(client=client) as runner:
        assert runner.run(a_release(), Hook.AFTER_ALLOW_TRAFFIC, spec).passed
        second = runner.run(a_release(), Hook.AFTER_ALLOW_TRAFFIC, spec)
    client.close()
    assert not second.passed
    assert "169.254.169.254, a link-local or metadata address" in second.detail


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "give private, none"),
        ("private,10.0.0.0/8", "stands alone"),
        ("http://x", "not a CIDR, an address or a host name"),
    ],
)
def test_a_bad_outbound_allow_says_what_to_write(text: str, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        OutboundPolicy.parse(text)


def test_a_hook_answer_is_read_up_to_a_bound_and_never_repeated(
    http_server: HttpServer,
) -> None:
    secret = "root:x:0:0 AKIA-SECRET "
    url = http_server.route("/big", 500, body=secret * (4 * MAX_ANSWER // len(secret)))
    with HttpHookRunner(backoff=0.01) as runner:
        outcome = runner.run(
            a_release(), Hook.AFTER_ALLOW_TRAFFIC, HookSpec(url=url, retries=0).config()
        )
    assert outcome.detail == f"after_allow_traffic hook {url} answered 500 after 1 attempt"


@pytest.fixture
def dripping_headers() -> Iterator[str]:
    """A server that answers every connection with its status line a byte every 0.2 s."""
    listener = socket.create_server(("127.0.0.1", 0))
    closing = threading.Event()

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                for byte in b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n":
                    conn.sendall(bytes([byte]))
                    if closing.wait(0.2):
                        return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    closing.set()
    listener.close()
    thread.join(5)


def test_a_hook_that_drips_its_headers_times_out_on_the_wall_clock(
    dripping_headers: str,
) -> None:
    spec = HookSpec(url=dripping_headers, timeout=0.5, retries=0).config()
    begun = time.monotonic()
    with HttpHookRunner() as runner:
        outcome = runner.run(a_release(), Hook.AFTER_ALLOW_TRAFFIC, spec)
    took = time.monotonic() - begun
    assert (
        outcome.detail
        == f"after_allow_traffic hook {dripping_headers} timed out (0.5s) after 1 attempt"
    )
    assert took < 1.5, f"the attempt took {took:.1f}s"


def test_a_dripping_prometheus_is_an_error_within_its_timeout(http_server: HttpServer) -> None:
    http_server.route("/api/v1/query", 200, body='{"status": "success"' + " " * 50, drip=0.2)
    begun = time.monotonic()
    evaluation = prometheus(http_server.url(""), timeout=0.5).evaluate()
    took = time.monotonic() - begun
    assert evaluation.state is EvaluationState.ERROR
    assert evaluation.detail.endswith("did not answer within 0.5s")
    assert took < 1.5, f"the query held the tick {took:.1f}s"


def test_a_huge_prometheus_answer_is_an_error(http_server: HttpServer) -> None:
    http_server.route("/api/v1/query", 200, body=" " * (ANSWER_LIMIT + 10))
    evaluation = prometheus(http_server.url("")).evaluate()
    assert evaluation.state is EvaluationState.ERROR
    assert evaluation.detail.endswith(f"answered 200 with more than {ANSWER_LIMIT} bytes")


def test_a_dripping_webhook_is_given_up_within_its_timeout(
    http_server: HttpServer, sqlite_url: str
) -> None:
    url = http_server.route("/events", 200, body="x" * 50, drip=0.2)
    store = open_store(sqlite_url)
    client = httpx.Client(transport=outbound.guarded_transport())
    # not started: the one delivery is sent here, on the test's thread
    webhooks = EventWebhooks(store, retries=0, timeout=0.5, client=client)
    try:
        start_release(ControlPlane(store), "10%:1h, 100%", webhooks=[url])
        begun = time.monotonic()
        assert webhooks.send_due()[0] == 1
        took = time.monotonic() - begun
    finally:
        client.close()
        store.dispose()
    assert (webhooks.delivered, webhooks.failed) == (0, 1)
    assert took < 1.5, f"one delivery held the webhook thread {took:.1f}s"


policies = st.sampled_from(
    [OutboundPolicy.default(), OutboundPolicy.parse("none"), OutboundPolicy.parse("10.0.0.0/8")]
)


@given(policy=policies, host=st.integers(0, 2**16 - 1))
def test_link_local_and_metadata_are_refused_under_every_policy(
    policy: OutboundPolicy, host: int
) -> None:
    address = str(ipaddress.ip_address("169.254.0.0") + host)
    assert policy.refuses("h", address) is not None
    assert policy.refuses("h", f"::ffff:{address}") is not None, "nor IPv4-mapped"


@given(policy=policies, address=st.ip_addresses())
def test_public_addresses_are_allowed_under_every_policy(
    policy: OutboundPolicy, address: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> None:
    assume(address.is_global and not address.is_multicast)
    assume(not (isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped))
    assert policy.refuses("h", str(address)) is None


@given(address=st.ip_addresses(network="10.0.0.0/8") | st.ip_addresses(network="127.0.0.0/8"))
def test_private_addresses_need_the_policy(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    assert OutboundPolicy.default().refuses("h", str(address)) is None
    assert OutboundPolicy.parse("none").refuses("h", str(address)) is not None
    assert OutboundPolicy.parse("h").refuses("h", str(address)) is None, "a listed host name"
