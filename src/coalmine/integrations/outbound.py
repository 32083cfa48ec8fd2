"""Where the controller's deployer-chosen outbound HTTP calls may go, and how much they read.

Hook URLs, event webhooks and Prometheus alarm URLs are chosen by whoever
deploys an app, so the controller checks every address such a call connects
to, at connect time (after DNS: a name that resolves elsewhere on the next
lookup is checked again), against the `OutboundPolicy`:

* link-local and cloud metadata addresses (169.254.0.0/16, which holds
  169.254.169.254, fe80::/10, fd00:ec2::254), "this network" (0.0.0.0/8,
  ::) and multicast are always refused;
* public addresses are always allowed;
* private and loopback addresses (10/8, 172.16/12, 192.168/16, 100.64/10,
  127/8, ::1, fc00::/7) are allowed by default (`OutboundPolicy.default`),
  since hook endpoints, Prometheus and webhook receivers usually live next
  to the controller; ``--outbound-allow`` narrows them to listed networks
  and host names (``none``: no private address at all).

`guarded_transport` is the httpx transport that applies the process's policy
(`set_policy`, set once by ``coalmine serve``). Within `deadline`, every
socket read and write of its connections on that thread is cut to the time
left, so a server that drips its status line, headers or body a byte at a
time cannot hold a call past it (httpx's own timeouts are per read).
`read_capped` reads at most a given number of bytes of an answer.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from coalmine.core.errors import InvalidInput

__all__ = [
    "ALWAYS_DENIED",
    "OutboundPolicy",
    "deadline",
    "guarded_transport",
    "policy",
    "read_capped",
    "set_policy",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

ALWAYS_DENIED: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16",  # link-local, cloud metadata (169.254.169.254)
        "0.0.0.0/8",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "fe80::/10",
        "fd00:ec2::254/128",  # AWS metadata over IPv6
        "::/128",
        "ff00::/8",
    )
)
PRIVATE: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "::1/128",
        "fc00::/7",
    )
)


def _ip(text: str) -> Address:
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    """Which private and loopback destinations are allowed (see the module)."""

    networks: tuple[Network, ...] = PRIVATE
    hosts: frozenset[str] = frozenset()

    @classmethod
    def default(cls) -> OutboundPolicy:
        return cls()

    @classmethod
    def parse(cls, text: str) -> OutboundPolicy:
        """``--outbound-allow``'s value: ``private`` (the default), ``none``, or a comma list
        of CIDRs, addresses and host names."""
        items = [item.strip() for item in text.split(",") if item.strip()]
        if items == ["private"]:
            return cls.default()
        if items == ["none"]:
            return cls((), frozenset())
        networks: list[Network] = []
        hosts: set[str] = set()
        for item in items:
            if item in ("private", "none"):
                raise InvalidInput(f"{item} stands alone, not in a list")
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
                continue
            except ValueError:
                pass
            if not all(part and (part.isalnum() or "-" in part) for part in item.split(".")):
                raise InvalidInput(f"{item!r} is not a CIDR, an address or a host name")
            hosts.add(item.lower().rstrip("."))
        if not items:
            raise InvalidInput("give private, none, or CIDRs and host names")
        return cls(tuple(networks), frozenset(hosts))

    def refuses(self, host: str, address: str) -> str | None:
        """Why connecting to ``address`` (resolved from ``host``) is refused; None: allowed."""
        ip = _ip(address)
        if any(ip in n for n in ALWAYS_DENIED):
            return f"{host} resolves to {ip}, a link-local or metadata address"
        if not any(ip in n for n in PRIVATE) and ip.is_global:
            return None
        if host.lower().rstrip(".") in self.hosts or any(ip in n for n in self.networks):
            return None
        return f"{host} resolves to {ip}, a private address not in --outbound-allow"


_policy = OutboundPolicy.default()


def set_policy(new: OutboundPolicy) -> None:
    """Set the process's policy (``coalmine serve --outbound-allow``)."""
    global _policy
    _policy = new


def policy() -> OutboundPolicy:
    return _policy


_local = threading.local()


@contextmanager
def deadline(seconds: float) -> Iterator[float]:
    """Calls made on this thread through `guarded_transport` within the block end (with
    ``httpx.TimeoutException``) once ``seconds`` have passed; yields the
    ``time.monotonic()`` deadline."""
    previous = getattr(_local, "deadline", None)
    end = time.monotonic() + seconds
    _local.deadline = end
    try:
        yield end
    finally:
        _local.deadline = previous


def _left(timeout: float | None, *, reading: bool) -> float | None:
    """``timeout`` cut to the time left before this thread's deadline."""
    end: float | None = getattr(_local, "deadline", None)
    if end is None:
        return timeout
    left = end - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout() if reading else httpcore.WriteTimeout()
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write ends by the thread's `deadline`."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(timeout, reading=True))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(timeout, reading=False))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        tls = self._stream.start_tls(ssl_context, server_hostname, _left(timeout, reading=True))
        return _DeadlineStream(tls)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _GuardedBackend(httpcore.SyncBackend):
    """Resolves the host itself, checks every address, and connects to a checked one."""

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        current = _policy
        for address in addresses:
            why = current.refuses(host, address)
            if why is not None:
                raise httpcore.ConnectError(f"refused by the outbound policy: {why}")
        last: Exception | None = None
        for address in addresses:
            try:
                stream = super().connect_tcp(
                    address, port, _left(timeout, reading=False), local_address, socket_options
                )
                return _DeadlineStream(stream)
            except httpcore.ConnectError as exc:
                last = exc
        raise last or httpcore.ConnectError(f"cannot resolve {host}")


def guarded_transport() -> httpx.HTTPTransport:
    """An httpx transport whose every connection the process's `OutboundPolicy` allows.

    Proxies from the environment are not used: the policy checks the
    destination itself."""
    transport = httpx.HTTPTransport()
    pool = transport._pool  # httpx builds its pool without a way to choose the backend
    transport._pool = httpcore.ConnectionPool(
        ssl_context=pool._ssl_context,
        network_backend=_GuardedBackend(),
    )
    return transport


def read_capped(response: httpx.Response, limit: int, deadline: float) -> bytes | None:
    """At most ``limit`` bytes of a streamed answer (the rest is not read); None when the
    ``time.monotonic()`` ``deadline`` passed while reading (a server dripping its answer)."""
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if time.monotonic() > deadline:
            return None
        if len(body) >= limit:
            del body[limit:]
            break
    return bytes(body)
