"""The HTTP side of a WebSocket through Tornado: its handshake, then the socket moves to a Transport.

A node that serves on its own answers plain handshakes at the acceptor
(``handshake.py``); Tornado answers the others (to refuse most of them) and
every handshake of an application that embeds fastim in its own server.

Tornado checks the request (Upgrade and Connection headers, version 13, the
key, the origin against ``[server] allowed_origins``) and sends the 101. After
that, Tornado's per-connection objects are let go: the raw socket and any
bytes read past the request go to a :class:`Transport`, and the socket object
built for the route carries on alone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import tornado.iostream
import tornado.ioloop
import tornado.web
import tornado.websocket

from fastim.interfaces.acceptor import ADDRESS_FULL, client_key, detach_slot, unassigned_slot
from fastim.interfaces.http.access_log import request_summary
from fastim.interfaces.http.gate import CorsPolicy
from fastim.interfaces.metrics import Metrics
from fastim.interfaces.ws.frames import CLOSE_INTERNAL_ERROR
from fastim.interfaces.ws.transport import Transport, TransportLimits

logger = logging.getLogger(__name__)


# Frames a little over [im] max_message_bytes still get a 413 answer from the chat socket;
# only far larger ones close the socket (1009), and never below this many bytes.
MIN_FRAME_LIMIT_BYTES = 64 * 1024
FRAME_LIMIT_FACTOR = 4
# A socket refused for its address's share ([server] max_connections_per_ip): as the acceptor's canned refusal.
ADDRESS_FULL_ENVELOPE = json.dumps({"code": 503, "msg": ADDRESS_FULL, "data": None})
RETRY_AFTER_S = "5"


def transport_limits(max_pending_bytes: int, max_message_bytes: int) -> TransportLimits:
    """The limits of every socket of a node, from ``[im] max_pending_bytes`` and ``max_message_bytes``."""
    return TransportLimits(max_pending_bytes, max(MIN_FRAME_LIMIT_BYTES, FRAME_LIMIT_FACTOR * max_message_bytes))


class OpenSocket(Protocol):
    """The socket a route builds on a fresh transport; ``open`` gets the path's arguments and the query."""

    async def open(self, *path_args: str, query: dict[str, str]) -> None: ...


class HandoverProtocol(tornado.websocket.WebSocketProtocol13):
    """Tornado's protocol for the handshake alone: it never reads a frame, the Transport does.

    With the frame loop a no-op, Tornado's coroutines for this connection end
    as soon as the route's ``open`` returns, and nothing of theirs stays.
    """

    async def _receive_frame_loop(self) -> None:
        return


class UpgradeHandler(tornado.websocket.WebSocketHandler):
    """The route handler of both socket kinds."""

    def initialize(
        self,
        cors: CorsPolicy,
        limits: TransportLimits,
        socket_factory: Callable[[Transport], OpenSocket],
        metrics: Metrics | None = None,
    ) -> None:
        self.cors = cors
        self.limits = limits
        self.socket_factory = socket_factory
        self.metrics = metrics
        self._assigned = None  # the proxied connection's slot, counted against the client until the upgrade ends
        self.refused_client = False

    def prepare(self) -> None:
        """Through a trusted proxy, the socket counts against its client's address ([server] max_connections_per_ip).

        The acceptor counted the proxy's connection for the node only; ``remote_ip``
        is the client the proxy named (fastim.interfaces.http.client_address).
        """
        slot = unassigned_slot(getattr(self.request.connection, "stream", None))
        if slot is None:
            return
        if slot.assign(client_key(self.request.remote_ip)) is None:
            self._assigned = slot
            return
        if self.metrics is not None:
            self.metrics.refused_connections.labels("address").inc()
        self.refused_client = True  # the access log says so as a warning
        self.set_status(503)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Retry-After", RETRY_AFTER_S)
        self.finish(ADDRESS_FULL_ENVELOPE)

    def on_finish(self) -> None:
        # 101: the slot went to the transport with its client, and is released with the socket.
        slot, self._assigned = self._assigned, None
        if slot is not None and self.get_status() != 101:
            slot.unassign()

    def check_origin(self, origin: str) -> bool:
        # Tornado already admits same-origin pages; other origins follow [server] allowed_origins.
        return self.cors.allows(origin)

    def get_websocket_protocol(self) -> tornado.websocket.WebSocketProtocol | None:
        if isinstance(getattr(self.request.connection, "stream", None), tornado.iostream.SSLIOStream):
            # An application embedding fastim may serve TLS itself: the Transport would read TLS
            # records as frames (a record split across TCP segments looks like a lost connection).
            raise tornado.web.HTTPError(
                501, "fastim's WebSockets need plain HTTP: terminate TLS in front of this server",
                reason="WebSockets are not served over TLS here",
            )
        if self.request.headers.get("Sec-WebSocket-Version") != "13":
            return None  # Tornado answers 426 with the version it speaks
        params = tornado.websocket._WebSocketParams(max_message_size=self.limits.max_message_bytes)
        return HandoverProtocol(self, False, params)

    async def open(self, *path_args: str) -> None:
        try:
            transport = await take_over(self.ws_connection.stream, self.limits)
        except tornado.iostream.StreamClosedError:
            return  # the client left before the 101 was out
        await open_socket(
            self.socket_factory, transport, path_args, socket_query(self.request.query_arguments),
            self._request_summary(),
        )

    def _request_summary(self) -> str:
        return request_summary(self.request)  # the path's token is redacted

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, tornado.web.HTTPError):
            super().log_exception(typ, value, tb)  # one line, through _request_summary
        else:  # never Tornado's default, which prints the request with its headers
            logger.error("handshake failed: %s", self._request_summary(), exc_info=(typ, value, tb))


def socket_query(arguments: Mapping[str, list[bytes]]) -> dict[str, str]:
    """A socket URL's query arguments, the last of each, as text (a value that is not UTF-8 is left out)."""
    query = {}
    for name, values in arguments.items():
        try:
            query[name] = values[-1].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return query


async def open_socket(
    socket_factory: Callable[[Transport], OpenSocket],
    transport: Transport,
    path_args: Sequence[str],
    query: dict[str, str],
    summary: str,
) -> None:
    """Build the route's socket on a transport past its 101, and open it; a bug of ours costs this socket only.

    ``summary`` is what the log may say of the request (its token redacted).
    """
    try:
        await socket_factory(transport).open(*path_args, query=query)
    except Exception:
        logger.exception("opening a socket failed: %s", summary)
        transport.close(CLOSE_INTERNAL_ERROR, "internal error")


async def take_over(stream: tornado.iostream.IOStream, limits: TransportLimits) -> Transport:
    """Move the connection from Tornado's stream to a Transport, with nothing lost on either side.

    The 101 answer is flushed first; bytes the HTTP parser already read past
    the request become the transport's first input; the stream is unregistered
    from the loop and marked closed, so that no Tornado code path can close
    the socket it no longer owns. Tornado has no public API for this; the
    private names used here are checked by ``tests/unit/test_upgrade.py``.
    """
    if stream.writing():
        await stream.write(b"")  # resolves once everything queued before it is in the kernel
    sock = stream.socket
    unread = bytes(memoryview(stream._read_buffer)[: stream._read_buffer_size])
    tornado.ioloop.IOLoop.current().remove_handler(sock.fileno())
    stream._state = None
    stream._closed = True
    return Transport(sock, limits, unread=unread, on_release=detach_slot(stream))
