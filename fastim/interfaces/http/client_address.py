"""Who a request comes from: behind a trusted proxy, the client its forwarding headers name; else the TCP peer.

``[server] trusted_proxies`` lists the proxies (nginx in front of the nodes)
whose ``X-Forwarded-For`` and ``X-Real-IP`` are believed. A request from such
a peer is from the first address of ``X-Forwarded-For``, read from the right,
that is not itself a trusted proxy; failing that from ``X-Real-IP``; failing
that from the peer. From any other peer both headers are ignored: anyone can
send them. Tornado's ``xheaders`` believes them from every peer, so it stays off.

:class:`ForwardedClients` puts that address in ``request.remote_ip`` (where
Tornado's own ``xheaders`` puts it) before the application sees the request,
so the access log, the login throttle and the per-address connection count
all see the client. Reading the headers costs at most O(header length).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Iterable
from typing import Any

from tornado import httputil

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Proxies in a row worth reading back through; a longer chain is a client's invention.
MAX_FORWARDED_HOPS = 16
# The longest written IP address (an IPv6 address with an IPv4 tail) is 45 characters.
MAX_ADDRESS_CHARS = 45


def parse_address(text: str) -> IpAddress | None:
    """``text`` as a bare IPv4 or IPv6 address, or None (ports, brackets, zones, names and junk are not addresses)."""
    text = text.strip()
    if not text or len(text) > MAX_ADDRESS_CHARS or not text.isascii() or "%" in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _unmapped(address: IpAddress) -> IpAddress:
    """``::ffff:10.0.0.1`` (a dual-stack socket's IPv4 peer) is ``10.0.0.1``."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """``[server] trusted_proxies``: the networks whose forwarding headers name the client."""

    __slots__ = ("networks",)

    def __init__(self, networks: Iterable[str] = ()) -> None:
        self.networks = tuple(ipaddress.ip_network(network, strict=False) for network in networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: IpAddress) -> bool:
        address = _unmapped(address)
        return any(address in network for network in self.networks)

    def trusts_peer(self, peer: Any) -> bool:
        """Whether a socket address (``(host, port, ...)`` as ``accept`` gives it) is a trusted proxy's."""
        if not self.networks or not isinstance(peer, tuple) or not peer or not isinstance(peer[0], str):
            return False
        address = parse_address(peer[0])
        return address is not None and self.trusts(address)

    def client_of(self, peer: str, forwarded_for: str | None, real_ip: str | None) -> str:
        """The client's address of a request from ``peer`` with these header values (None: absent)."""
        address = parse_address(peer)
        if address is None or not self.trusts(address):
            return peer
        if forwarded_for:
            client = self._from_forwarded_for(forwarded_for)
            if client is not None:
                return str(client)
        if real_ip:
            client = parse_address(real_ip)
            if client is not None:
                return str(client)
        return peer

    def _from_forwarded_for(self, value: str) -> IpAddress | None:
        """The first hop from the right that is not a trusted proxy; None when a hop is malformed or all are proxies."""
        hops = value.rsplit(",", MAX_FORWARDED_HOPS)
        if len(hops) > MAX_FORWARDED_HOPS:
            hops = hops[1:]  # what lies further left than the proxies we would believe is not read
        for hop in reversed(hops):
            address = parse_address(hop)
            if address is None:
                return None  # every hop left of a malformed one was written by someone we cannot vouch for
            if not self.trusts(address):
                return address
        return None


class ForwardedClients(httputil.HTTPServerConnectionDelegate):
    """Wraps the application (the server's delegate): a trusted proxy's requests get their client's ``remote_ip``."""

    def __init__(self, application: httputil.HTTPServerConnectionDelegate, proxies: TrustedProxies) -> None:
        self.application = application
        self.proxies = proxies

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        inner = self.application.start_request(server_conn, request_conn)
        context = getattr(request_conn, "context", None)
        family = getattr(context, "address_family", None)
        if family not in (socket.AF_INET, socket.AF_INET6) or not self.proxies.trusts_peer(context.address):
            return inner  # the peer is the client, whatever its headers say
        return _ForwardedRequest(inner, context, context.address[0], self.proxies)

    def on_close(self, server_conn: object) -> None:
        self.application.on_close(server_conn)


class _ForwardedRequest(httputil.HTTPMessageDelegate):
    """One request from a trusted proxy: its client's address is set before the application reads it."""

    __slots__ = ("_inner", "_context", "_peer", "_proxies")

    def __init__(
        self, inner: httputil.HTTPMessageDelegate, context: Any, peer: str, proxies: TrustedProxies
    ) -> None:
        self._inner = inner
        self._context = context
        self._peer = peer
        self._proxies = proxies

    def headers_received(
        self, start_line: httputil.RequestStartLine | httputil.ResponseStartLine, headers: httputil.HTTPHeaders
    ) -> Awaitable[None] | None:
        # Tornado's request takes remote_ip from the connection's context when it is built, next; set on
        # every request, so that a kept-alive proxy connection never lends one client's address to the next.
        self._context.remote_ip = self._proxies.client_of(
            self._peer, headers.get("X-Forwarded-For"), headers.get("X-Real-IP")
        )
        return self._inner.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return self._inner.data_received(chunk)

    def finish(self) -> None:
        self._inner.finish()

    def on_connection_close(self) -> None:
        self._inner.on_connection_close()
