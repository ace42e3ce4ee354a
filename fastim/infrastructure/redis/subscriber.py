"""One pub/sub connection on hiredis: (un)subscribe commands out, published messages in, no polling.

A connection in subscribed mode answers each channel of a SUBSCRIBE,
UNSUBSCRIBE, SSUBSCRIBE or SUNSUBSCRIBE with a confirmation, in the order
sent, or the whole command with one error (``MOVED`` on a cluster node that
does not own the channel's slot), and pushes messages as they come. A cluster node also pushes a
``sunsubscribe`` of its own when the channel's slot leaves it (a failover, a
migration): the subscriber is told, so the channel can be subscribed where it
went.

Before subscribing, a new connection logs in (AUTH, as the endpoint's URL
asks); those replies come first, in order. Whatever else Redis sends is
judged by its shape: an unreadable stream closes the connection, a reply of
an unknown shape is ignored, a (un)subscribe left unanswered shows as
:meth:`Subscriber.stalled`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any, Protocol

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from fastim.infrastructure.redis.endpoint import Endpoint


class SubscriberEvents(Protocol):
    def message(self, channel: str, data: str) -> None:
        """A message published on ``channel`` (classic or sharded)."""

    def confirmed(self, command: str, channel: str) -> None:
        """``command`` (SUBSCRIBE, SSUBSCRIBE, SUNSUBSCRIBE, UNSUBSCRIBE) took effect for ``channel``."""

    def refused(self, command: str, channel: str, error: str) -> None:
        """``command`` failed for ``channel`` with ``error`` (a MOVED, ...)."""

    def dropped(self, channel: str) -> None:
        """The server unsubscribed ``channel`` by itself: its slot moved elsewhere."""

    def lost(self, reason: str) -> None:
        """The connection is gone; nothing is subscribed any more."""


_MESSAGES = frozenset({"message", "smessage"})
_CONFIRMATIONS = {"subscribe": "SUBSCRIBE", "ssubscribe": "SSUBSCRIBE",
                  "unsubscribe": "UNSUBSCRIBE", "sunsubscribe": "SUNSUBSCRIBE"}


class Subscriber(asyncio.Protocol):
    """The byte stream of one pub/sub connection; see the module's docstring."""

    def __init__(self, events: SubscriberEvents) -> None:
        self._events = events
        self._parser = hiredis.Reader(encoding="utf-8", errors="replace", replyError=ResponseError)
        # (command, channel, the command's number) awaiting their answer, in order
        self._sent: deque[tuple[str, str, int]] = deque()
        self._commands = 0  # commands sent so far: which channels one error answers
        self._waiting_since = 0.0  # when the oldest command awaiting its answer became the oldest
        self._login: deque[asyncio.Future[Any]] = deque()  # replies to the login commands, awaited first
        self.transport: asyncio.Transport | None = None
        self.received_at = time.monotonic()
        self._gone = False
        self.lost_because = ""  # once the connection is gone: why

    @classmethod
    async def open(cls, events: SubscriberEvents, endpoint: Endpoint, timeout: float) -> Subscriber:
        """A connection to ``endpoint``, logged in; raises as the socket does, or the AUTH's error, or TimeoutError."""
        async with asyncio.timeout(timeout):
            protocol = await endpoint.open(lambda: cls(events))
            try:
                await protocol._log_in(endpoint.login())
            except BaseException:
                protocol.close("connection setup failed")
                raise
        return protocol

    async def _log_in(self, commands: list[tuple[Any, ...]]) -> None:
        if not commands:
            return
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in commands]
        self._login.extend(futures)
        self.transport.write(b"".join(hiredis.pack_command(command) for command in commands))
        for future in futures:
            await future

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self._gone

    def send(self, command: str, channels: list[str], *, together: bool = False) -> None:
        """``command`` for ``channels`` in one write: one command per channel, or one for all ``together``.

        Sharded channels go one per command (a command's channels must share a slot, and each may
        be refused on its own); classic ones may go together, which Redis counts as one command.
        """
        if not channels or not self.is_open:
            return
        if not self._sent:
            self._waiting_since = time.monotonic()
        if together:
            self._commands += 1
            self._sent.extend((command, channel, self._commands) for channel in channels)
            self.transport.write(hiredis.pack_command((command, *channels)))
            return
        first = self._commands + 1
        self._commands += len(channels)
        self._sent.extend((command, channel, first + i) for i, channel in enumerate(channels))
        self.transport.write(b"".join(hiredis.pack_command((command, channel)) for channel in channels))

    def data_received(self, data: bytes) -> None:
        self.received_at = time.monotonic()
        self._parser.feed(data)
        while not self._gone:
            try:
                reply = self._parser.gets()
            except hiredis.ProtocolError as exc:
                self.close(f"unreadable reply from Redis: {exc}")
                return
            if reply is False:
                return
            self._dispatch(reply)

    def stalled(self, timeout: float) -> bool:
        """Whether a command has waited ``timeout`` seconds with no answer to it or to any before it."""
        return bool(self._sent) and time.monotonic() - self._waiting_since > timeout

    def _dispatch(self, reply: Any) -> None:
        if self._login:
            future = self._login.popleft()
            if not future.done():
                if isinstance(reply, Exception):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
            return
        if isinstance(reply, ResponseError):
            if self._sent:  # the error answers every channel of the oldest command
                command, channel, number = self._answered()
                refused = [(command, channel)]
                while self._sent and self._sent[0][2] == number:
                    refused.append(self._sent.popleft()[:2])
                for command, channel in refused:
                    self._events.refused(command, channel, str(reply))
            return
        # A hostile or broken server may send any shape: only lists that start with two strings are looked at.
        if not isinstance(reply, list) or len(reply) < 3:
            return
        kind, channel = reply[0], reply[1]
        if not isinstance(kind, str) or not isinstance(channel, str):
            return
        if kind in _MESSAGES:
            if isinstance(reply[2], str):
                self._events.message(channel, reply[2])
            return
        command = _CONFIRMATIONS.get(kind)
        if command is None:
            return
        if self._sent and self._sent[0][:2] == (command, channel):
            self._answered()
            self._events.confirmed(command, channel)
        elif command == "SUNSUBSCRIBE":
            self._events.dropped(channel)  # the server's own: the slot left this node

    def _answered(self) -> tuple[str, str, int]:
        self._waiting_since = time.monotonic()
        return self._sent.popleft()

    def close(self, reason: str) -> None:
        if self.transport is not None:
            self.transport.abort()
        self._lose(reason)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose(f"connection to Redis lost: {exc}" if exc else "connection to Redis closed")

    def _lose(self, reason: str) -> None:
        if self._gone:
            return
        self._gone = True
        self.lost_because = reason
        self._sent.clear()
        login, self._login = self._login, deque()
        for future in login:
            if not future.done():
                future.set_exception(RedisConnectionError(reason))
        self._events.lost(reason)

