"""The node's listening sockets: connections counted per node and per address, refused cheaply, accept errors survived.

Tornado's own accept loop admits every connection, and when the process runs
out of file descriptors its listening socket stays readable while ``accept``
keeps failing: the node spins and logs a traceback per attempt. Here every
connection takes a slot before Tornado sees it; one over a limit gets a
canned 503 answer and is closed without being parsed, and ``EMFILE`` and its
kin pause accepting for a growing while, logged once per interval with a count.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import logging
import socket
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import tornado.httpserver
import tornado.iostream

if TYPE_CHECKING:
    from fastim.interfaces.ws.handshake import Handshakes

logger = logging.getLogger(__name__)

# Accepts per readable event before other work gets a turn (Tornado uses the listen backlog, 128).
ACCEPTS_PER_EVENT = 128
# The process (or the system) is out of descriptors or memory: accepting again at once would fail again.
RESOURCE_ERRNOS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
# The first pause is short enough to serve again soon after clients leave, the cap keeps a
# starved node to two attempts a second.
BACKOFF_INITIAL_S = 0.05
BACKOFF_CAP_S = 0.5
# At most one log line per this many seconds about failing accepts, however many there were.
LOG_INTERVAL_S = 10.0
# A refused client's request may still be arriving: its socket is drained for a moment so that
# the kernel does not answer with a reset that would destroy the 503 before it is read. Few at once,
# so that refusals never hold more than a handful of descriptors.
REFUSAL_LINGER_S = 1.0
MAX_LINGERING_REFUSALS = 64
# IPv6 clients get a /64 each from their provider: one client, many addresses.
IPV6_PREFIX = 64


def _canned_503(msg: str) -> bytes:
    body = json.dumps({"code": 503, "msg": msg, "data": None}).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json; charset=UTF-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Retry-After: 5\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


ADDRESS_FULL = "too many connections from your address; close some first"
REFUSED_NODE_FULL = _canned_503("too many connections to this node; try again later")
REFUSED_ADDRESS_FULL = _canned_503(ADDRESS_FULL)


def client_key(address: Any) -> str:
    """The address a per-client limit counts: the IPv4 address, or the IPv6 /64."""
    host = address[0] if isinstance(address, tuple) and address else str(address)
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return sys.intern(host)  # a unix socket path or something else: count it as is
    if ip.version == 6:
        mapped = ip.ipv4_mapped
        key = str(mapped) if mapped is not None else str(ipaddress.ip_network(f"{ip}/{IPV6_PREFIX}", strict=False))
    else:
        key = str(ip)
    return sys.intern(key)  # one string per client address, however many connections hold it


class Admission:
    """Counts the open connections of the node and of each client address against the limits (0: none).

    A connection from a trusted proxy is admitted with the key None: it counts
    for the node only, until a WebSocket through it is assigned to the client
    the proxy named (:meth:`_Slot.assign`).
    """

    def __init__(self, max_connections: int, max_per_address: int) -> None:
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.open = 0
        self._by_address: dict[str, int] = {}

    def admit(self, key: str | None) -> bytes | None:
        """Take a slot for a connection from ``key`` (None: for the node only); the refusal when there is none."""
        if self.max_connections and self.open >= self.max_connections:
            return REFUSED_NODE_FULL
        if key is not None:
            refusal = self.charge(key)
            if refusal is not None:
                return refusal
        self.open += 1
        return None

    def release(self, key: str | None) -> None:
        self.open -= 1
        if key is not None:
            self.uncharge(key)

    def charge(self, key: str) -> bytes | None:
        """Count one more connection against the address ``key``; the refusal when it has its share."""
        count = self._by_address.get(key, 0)
        if self.max_per_address and count >= self.max_per_address:
            return REFUSED_ADDRESS_FULL
        self._by_address[key] = count + 1
        return None

    def uncharge(self, key: str) -> None:
        count = self._by_address[key] - 1
        if count:
            self._by_address[key] = count
        else:
            del self._by_address[key]

    def slot(self, key: str | None) -> _Slot:
        """A callable that gives the slot back; its holder calls it once (the stream, then the transport)."""
        return _Slot(self, key)


class _Slot:
    """One connection's slot: held by every open socket, so as small as a callable gets (a partial is 4x this)."""

    __slots__ = ("admission", "key")

    def __init__(self, admission: Admission, key: str | None) -> None:
        self.admission = admission
        self.key = key  # the address it counts against; None: none (yet)

    def __call__(self) -> None:
        key, self.key = self.key, None
        self.admission.release(key)

    def assign(self, key: str) -> bytes | None:
        """Count this connection (a trusted proxy's, so far counted for no address) against the client ``key``.

        Held until the slot is released or :meth:`unassign` is called; the refusal when ``key`` has its share.
        """
        assert self.key is None, "a connection counts against one address"
        refusal = self.admission.charge(key)
        if refusal is None:
            self.key = key
        return refusal

    def unassign(self) -> None:
        """Undo :meth:`assign` (the upgrade it was for did not happen); nothing once the slot was released."""
        key, self.key = self.key, None
        if key is not None:
            self.admission.uncharge(key)


class CountedStream(tornado.iostream.IOStream):
    """Tornado's stream holding a connection slot, given back when the stream closes or moves on."""

    def __init__(self, sock: socket.socket, release: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(sock, **kwargs)
        self._release_slot: Callable[[], None] | None = release

    def close(self, exc_info: Any = False) -> None:
        super().close(exc_info)
        release = self.detach_slot()
        if release is not None:
            release()

    def unread(self, data: bytes) -> None:
        """Put back bytes read from the socket before the stream existed: the HTTP parser reads them first.

        Tornado has no public API for this; ``tests/interfaces/test_upgrade.py`` checks the names used.
        """
        self._read_buffer += data
        self._read_buffer_size += len(data)

    def detach_slot(self) -> Callable[[], None] | None:
        """Take the slot away from the stream, for whoever owns the socket next (a WebSocket transport)."""
        release, self._release_slot = self._release_slot, None
        return release


def detach_slot(stream: tornado.iostream.IOStream) -> Callable[[], None] | None:
    """The connection slot a stream holds, if it came through an :class:`Acceptor`."""
    return stream.detach_slot() if isinstance(stream, CountedStream) else None


def unassigned_slot(stream: object) -> _Slot | None:
    """The slot of a trusted proxy's connection that counts against no address yet; None for any other stream."""
    slot = stream._release_slot if isinstance(stream, CountedStream) else None
    return slot if isinstance(slot, _Slot) and slot.key is None else None


class Acceptor:
    """Accepts on listening sockets for an ``HTTPServer``, within the node's :class:`Admission`."""

    def __init__(
        self,
        server: tornado.httpserver.HTTPServer,
        admission: Admission,
        on_refused: Callable[[str], None] | None = None,
        trusted_proxy: Callable[[Any], bool] | None = None,
        handshakes: Handshakes | None = None,
    ) -> None:
        self._server = server
        # Reads each connection's first request: WebSocket handshakes are answered there, the rest comes back.
        self._handshakes = handshakes
        self.admission = admission
        self._on_refused = on_refused or (lambda reason: None)
        # A trusted proxy's connections carry many clients: they are counted per client at the upgrade.
        self._trusted_proxy = trusted_proxy or (lambda address: False)
        self._loop = asyncio.get_running_loop()
        self._sockets: list[socket.socket] = []
        self._paused = False
        self._backoff = BACKOFF_INITIAL_S
        self._resume_handle: Any = None
        self._failures = 0  # accept errors since the last log line
        self._last_log = float("-inf")
        self._lingering = 0

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            sock.setblocking(False)
            self._sockets.append(sock)
            self._loop.add_reader(sock.fileno(), self._on_acceptable, sock)

    def stop(self) -> None:
        """Stop accepting and close the listening sockets, and the connections still sending their first request."""
        if self._handshakes is not None:
            self._handshakes.close()
        if self._resume_handle is not None:
            self._resume_handle.cancel()
            self._resume_handle = None
        for sock in self._sockets:
            if not self._paused:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets = []

    def _on_acceptable(self, sock: socket.socket) -> None:
        for _ in range(ACCEPTS_PER_EVENT):
            try:
                connection, address = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up while waiting in the backlog
            except OSError as exc:
                self._accept_failed(exc)
                return
            self._backoff = BACKOFF_INITIAL_S
            try:
                self._admit(connection, address)
            except Exception:  # a bug of ours must cost one connection, not the accept loop
                logger.exception("accepting a connection from %s failed", address)
                connection.close()

    def _admit(self, connection: socket.socket, address: Any) -> None:
        key = None if self._trusted_proxy(address) else client_key(address)
        refusal = self.admission.admit(key)
        if refusal is not None:
            self._refuse(connection, refusal)
        else:
            slot = self.admission.slot(key)
            if self._handshakes is not None:
                self._handshakes.start(connection, address, slot, self._serve)
            else:
                self._serve(connection, address, slot)

    def _serve(self, connection: socket.socket, address: Any, release: Callable[[], None], read: bytes = b"") -> None:
        """Give the connection to Tornado's HTTP server; ``read``: what was already read of its request."""
        try:
            stream = CountedStream(
                connection, release,
                max_buffer_size=self._server.max_buffer_size, read_chunk_size=self._server.read_chunk_size,
            )
        except Exception:  # a bug of ours must cost one connection, not the accept loop
            logger.exception("serving a connection from %s failed", address)
            release()
            connection.close()
            return
        if read:
            stream.unread(read)
        self._server.handle_stream(stream, address)

    # -- refusing ------------------------------------------------------------------------

    def _refuse(self, connection: socket.socket, answer: bytes) -> None:
        self._on_refused("node" if answer is REFUSED_NODE_FULL else "address")
        try:
            connection.setblocking(False)
            connection.send(answer)
            connection.shutdown(socket.SHUT_WR)
            _drain(connection)
        except OSError:
            connection.close()
            return
        if self._lingering >= MAX_LINGERING_REFUSALS:
            connection.close()
            return
        self._lingering += 1
        fd = connection.fileno()
        handle = self._loop.call_later(REFUSAL_LINGER_S, self._forget, connection, fd)
        self._loop.add_reader(fd, self._on_refused_readable, connection, fd, handle)

    def _on_refused_readable(self, connection: socket.socket, fd: int, handle: Any) -> None:
        try:
            open_ = _drain(connection)
        except OSError:
            open_ = False
        if not open_:
            handle.cancel()
            self._forget(connection, fd)

    def _forget(self, connection: socket.socket, fd: int) -> None:
        self._loop.remove_reader(fd)
        connection.close()
        self._lingering -= 1

    # -- accept errors -----------------------------------------------------------------

    def _accept_failed(self, exc: OSError) -> None:
        self._failures += 1
        now = self._loop.time()
        resource = exc.errno in RESOURCE_ERRNOS
        if now - self._last_log >= LOG_INTERVAL_S:
            what = "out of resources" if resource else "failing"
            logger.warning(
                "accepting connections is %s: %s (%d failed accepts since the last report); "
                "pausing for up to %g s at a time", what, exc.strerror or exc, self._failures, BACKOFF_CAP_S,
            )
            self._last_log = now
            self._failures = 0
        self._pause()

    def _pause(self) -> None:
        if self._paused:
            return
        self._paused = True
        for sock in self._sockets:
            self._loop.remove_reader(sock.fileno())
        self._resume_handle = self._loop.call_later(self._backoff, self._resume)
        self._backoff = min(self._backoff * 2, BACKOFF_CAP_S)

    def _resume(self) -> None:
        self._resume_handle = None
        self._paused = False
        for sock in self._sockets:
            self._loop.add_reader(sock.fileno(), self._on_acceptable, sock)


def _drain(connection: socket.socket) -> bool:
    """Read and drop what a refused client sent; False once it has hung up."""
    for _ in range(16):  # at most 64 KiB per event: a refused client gets no more of our time
        try:
            data = connection.recv(4096)
        except (BlockingIOError, InterruptedError):
            return True
        if not data:
            return False
    return True
