"""A fresh connection's WebSocket handshake, answered at the acceptor when it is the plain case.

The first bytes of every connection the node accepts are read here. A
well-formed ``GET`` of one of the socket URLs, with the headers a handshake
needs and nothing unusual, is answered 101 on the spot, and the connection
goes straight to a :class:`Transport`: no Tornado stream, HTTP connection,
request, handler or coroutine is built for it. Those were most of what
opening a socket cost, in CPU and in the heap they leave fragmented.

Anything else goes to Tornado with the bytes read so far, and Tornado
answers as it always did: plain HTTP requests, and every handshake it would
refuse or that this parser does not understand completely (another method or
version, a header line Tornado would reject, a repeated header, a body, an
origin that is not allowed, a path argument that is not UTF-8, a trusted
proxy's client over its share, a head over 16 KiB). So this module only
ever says yes, and every refusal and
edge case keeps Tornado's answer. An application that embeds fastim in its
own Tornado server does not come through here; its sockets open through
:class:`~fastim.interfaces.ws.upgrade.UpgradeHandler` as before.

What a client can make the node spend here is in proportion to what it
sent and bounded: at most :data:`HEAD_LIMIT` bytes kept, each byte scanned
once however the head is cut into packets, and a connection that sends no
complete head within ``[server] header_timeout`` of connecting is closed,
as Tornado closes it (a head over the limit goes to Tornado, whose own
``header_timeout`` then starts).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from tornado.httputil import parse_qs_bytes

from fastim.interfaces.acceptor import client_key
from fastim.interfaces.http.access_log import access_log, redact_path
from fastim.interfaces.http.client_address import TrustedProxies
from fastim.interfaces.http.gate import CorsPolicy
from fastim.interfaces.ws.transport import Transport, TransportLimits
from fastim.interfaces.ws.upgrade import OpenSocket, open_socket, socket_query

logger = logging.getLogger(__name__)

# A browser's handshake is a few hundred bytes, with cookies a few KiB; a longer head goes to Tornado.
HEAD_LIMIT = 16 * 1024
_HEAD_END = re.compile(rb"\r?\n\r?\n")  # where Tornado ends a head (it still takes a bare LF)
_CRLF = b"\r\n\r\n"
_ACCEPT_MAGIC = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
# RFC 9110 §5.1, 5.5: a field name is a token; a value visible ASCII with inner spaces and tabs.
_HEADER_LINE = re.compile(r"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([!-~]+(?:[ \t]+[!-~]+)*)?[ \t]*")
# A Host this parser is sure of: a name or IPv4 address, or a bracketed IPv6 address, and a port.
_HOST = re.compile(r"(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
# Headers after which Tornado would read a body or choose differently than the plain case does.
_NOT_PLAIN = frozenset(("content-length", "transfer-encoding", "sec-websocket-origin", "expect"))
_SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "


@dataclass(frozen=True)
class SocketRoute:
    """A socket URL: its path pattern (the groups are the path's arguments) and what opens a socket there."""

    pattern: str
    factory: Callable[[Transport], OpenSocket]


@dataclass(frozen=True)
class Handshake:
    """A plain WebSocket handshake for one of the routes, as read from a request head."""

    route: SocketRoute
    path: str
    path_args: tuple[str, ...]
    query: dict[str, str]
    key: str  # Sec-WebSocket-Key
    headers: dict[str, str]  # lower-case names; every name appears once


def read_handshake(head: bytes, routes: Sequence[tuple[re.Pattern[str], SocketRoute]]) -> Handshake | None:
    """The handshake ``head`` (a request head without its final blank line) asks for; None unless plain.

    None says "let Tornado answer", never "refuse": it is the answer for
    everything that is not a complete, ordinary handshake of a socket URL.
    """
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        return None
    lines = text.split("\r\n")
    request_line = lines[0].split(" ")
    if len(request_line) != 3 or request_line[0] != "GET" or request_line[2] != "HTTP/1.1":
        return None
    path, _, query = request_line[1].partition("?")
    for pattern, route in routes:
        match = pattern.fullmatch(path)
        if match is not None:
            break
    else:
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        field = _HEADER_LINE.fullmatch(line)
        if field is None:
            return None  # a bare CR or LF, folding, a control character, a name that is not a token
        name = field[1].lower()
        if name in headers or name in _NOT_PLAIN:
            return None
        headers[name] = field[2] or ""
    key = headers.get("sec-websocket-key")
    if (
        not key
        or headers.get("sec-websocket-version") != "13"
        or headers.get("upgrade", "").lower() != "websocket"
        or "upgrade" not in (token.strip().lower() for token in headers.get("connection", "").split(","))
        or not _HOST.fullmatch(headers.get("host", ""))
    ):
        return None
    try:
        path_args = tuple(_unquote(arg) for arg in match.groups())
    except UnicodeDecodeError:
        return None
    return Handshake(route, path, path_args, socket_query(parse_qs_bytes(query, keep_blank_values=True)), key,
                     headers)


def _unquote(arg: str) -> str:
    """A path argument as Tornado gives it to a handler: percent-decoded (``+`` stays), then UTF-8."""
    return unquote_to_bytes(arg).decode("utf-8") if "%" in arg else arg


def accept_value(key: str) -> bytes:
    """``Sec-WebSocket-Accept`` for ``key`` (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _ACCEPT_MAGIC).digest())


class _Pending:
    """A connection whose request head is not complete yet."""

    __slots__ = ("connection", "address", "release", "fallback", "head", "timer")

    def __init__(self, connection: socket.socket, address: Any, release: Callable[[], None],
                 fallback: Callable[..., None]) -> None:
        self.connection = connection
        self.address = address
        self.release = release
        self.fallback = fallback
        self.head = bytearray()  # what came of the head so far, when it took more than one read
        self.timer: asyncio.TimerHandle | None = None  # set while waiting on the loop for more


Fallback = Callable[[socket.socket, Any, Callable[[], None], bytes], None]


class Handshakes:
    """Reads each new connection's request head; answers plain socket handshakes, gives the rest to Tornado."""

    def __init__(
        self,
        routes: Sequence[SocketRoute],
        cors: CorsPolicy,
        limits: TransportLimits,
        proxies: TrustedProxies,
        header_timeout: float,
    ) -> None:
        self._routes = [(re.compile(route.pattern), route) for route in routes]
        self._cors = cors
        self._limits = limits
        self._proxies = proxies
        self._header_timeout = header_timeout
        self._loop = asyncio.get_running_loop()
        self._pending: set[_Pending] = set()  # waiting for their head on the loop
        self._opening: set[asyncio.Task[None]] = set()  # sockets whose open() runs

    def start(self, connection: socket.socket, address: Any, release: Callable[[], None], fallback: Fallback) -> None:
        """Take a fresh connection holding the slot ``release`` gives back; ``fallback`` hands it to Tornado."""
        connection.setblocking(False)
        self._read(_Pending(connection, address, release, fallback))  # under load the head is there already

    def close(self) -> None:
        """Close the connections still sending their head (the node stops)."""
        for pending in list(self._pending):
            self._drop(pending)

    # -- reading the head --------------------------------------------------------------

    def _read(self, pending: _Pending) -> None:
        try:
            chunk = pending.connection.recv(HEAD_LIMIT - len(pending.head))
        except (BlockingIOError, InterruptedError):
            if pending.timer is None:
                self._wait(pending)
            return
        except OSError:
            self._drop(pending)
            return
        if not chunk:
            self._drop(pending)  # the client left before asking anything
            return
        seen = len(pending.head)
        if seen:
            pending.head += chunk
            head = pending.head
        else:
            head = chunk  # nearly always: the whole head in one read
        end = _HEAD_END.search(head, max(0, seen - 3))  # each byte scanned once, however the head is cut
        if end is None and len(head) < HEAD_LIMIT:
            if not seen:
                pending.head += chunk
            if pending.timer is None:
                self._wait(pending)
            return
        self._stop_waiting(pending)
        if seen:
            head = bytes(head)
        if end is None or end.group() != _CRLF or not self._upgrade(pending, head, end.start()):
            pending.fallback(pending.connection, pending.address, pending.release, head)

    def _wait(self, pending: _Pending) -> None:
        self._pending.add(pending)
        pending.timer = self._loop.call_later(self._header_timeout, self._drop, pending)
        self._loop.add_reader(pending.connection.fileno(), self._read, pending)

    def _stop_waiting(self, pending: _Pending) -> None:
        if pending.timer is not None:
            pending.timer.cancel()
            self._loop.remove_reader(pending.connection.fileno())
            self._pending.discard(pending)

    def _drop(self, pending: _Pending) -> None:
        """Close a connection that sent no request (gone, or silent past ``header_timeout``), as Tornado does."""
        self._stop_waiting(pending)
        pending.connection.close()
        pending.release()

    # -- answering ---------------------------------------------------------------------

    def _upgrade(self, pending: _Pending, head: bytes, end: int) -> bool:
        """Answer a plain handshake with 101 and open its socket; False to let Tornado answer instead."""
        started = time.perf_counter()
        try:
            handshake = read_handshake(head[:end], self._routes)
            if handshake is None or not self._origin_allowed(handshake.headers):
                return False
            client = self._client(pending, handshake.headers)
        except Exception:  # a bug of ours: Tornado still answers the request
            logger.exception("reading a handshake from %s failed", pending.address)
            return False
        if client is None:
            return False
        connection = pending.connection
        answer = b"%s%s\r\n\r\n" % (_SWITCHING, accept_value(handshake.key))
        try:
            if connection.family != socket.AF_UNIX:
                connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as Tornado's sockets have it
            sent = connection.send(answer)
        except OSError:
            sent = 0
        if sent != len(answer):  # a fresh socket takes 150 bytes whole, unless its client is gone
            connection.close()
            pending.release()
            return True
        transport = Transport(connection, self._limits, unread=head[end + 4:], on_release=pending.release)
        summary = f"GET {redact_path(handshake.path)} ({client})"
        if access_log.isEnabledFor(logging.INFO):
            access_log.info("%d %s %.2fms", 101, summary, 1000.0 * (time.perf_counter() - started))
        task = self._loop.create_task(open_socket(
            handshake.route.factory, transport, handshake.path_args, handshake.query, summary,
        ))
        self._opening.add(task)
        task.add_done_callback(self._opening.discard)
        return True

    def _origin_allowed(self, headers: dict[str, str]) -> bool:
        """Tornado's cross-origin rule for WebSockets, with ``[server] allowed_origins`` as its check."""
        fetch_site = headers.get("sec-fetch-site")
        origin = headers.get("origin")
        if fetch_site in ("same-origin", "none"):
            return True
        if fetch_site is not None:
            return bool(origin) and self._cors.allows(origin)
        if origin is None:
            return True  # not a browser
        try:
            same = urlsplit(origin).netloc.lower() == headers["host"].lower()
        except ValueError:
            return False  # Tornado's own answer to a malformed origin
        return same or self._cors.allows(origin)

    def _client(self, pending: _Pending, headers: dict[str, str]) -> str | None:
        """Who the socket is from; through a trusted proxy it counts against that client (None: over its share)."""
        address = pending.address
        peer = address[0] if isinstance(address, tuple) and address else str(address)
        if not self._proxies.trusts_peer(address):
            return peer
        client = self._proxies.client_of(peer, headers.get("x-forwarded-for"), headers.get("x-real-ip"))
        if pending.release.assign(client_key(client)) is not None:
            return None  # Tornado answers the 503 and counts the refusal
        return client
