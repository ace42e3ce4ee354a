"""One pub/sub connection on hiredis: (un)subscribe commands out, published messages in, no polling.

A connection in subscribed mode answers each SUBSCRIBE, SSUBSCRIBE and
SUNSUBSCRIBE (one channel per command here) with a confirmation or an error
(``MOVED`` on a cluster node that does not own the channel's slot), in the
order sent, and pushes messages as they come. A cluster node also pushes a
``sunsubscribe`` of its own when the channel's slot leaves it (a failover, a
migration): the subscriber is told, so the channel can be subscribed where it
went.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any, Protocol

import hiredis
from redis.exceptions import ResponseError


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
        self._sent: deque[tuple[str, str]] = deque()  # (command, channel) awaiting their answer, in order
        self.transport: asyncio.Transport | None = None
        self.received_at = time.monotonic()
        self._gone = False

    @classmethod
    async def open(cls, events: SubscriberEvents, host: str, port: int, timeout: float) -> Subscriber:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            _, protocol = await loop.create_connection(lambda: cls(events), host, port)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self._gone

    def send(self, command: str, channels: list[str]) -> None:
        """One ``command`` per channel, all in one write."""
        if not channels or not self.is_open:
            return
        self._sent.extend((command, channel) for channel in channels)
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

    def _dispatch(self, reply: Any) -> None:
        if isinstance(reply, ResponseError):
            if self._sent:
                command, channel = self._sent.popleft()
                self._events.refused(command, channel, str(reply))
            return
        if not isinstance(reply, list) or len(reply) < 3:
            return
        kind = reply[0]
        if kind in _MESSAGES:
            self._events.message(reply[1], reply[2])
            return
        command = _CONFIRMATIONS.get(kind)
        if command is None:
            return
        channel = reply[1]
        if self._sent and self._sent[0] == (command, channel):
            self._sent.popleft()
            self._events.confirmed(command, channel)
        elif command == "SUNSUBSCRIBE":
            self._events.dropped(channel)  # the server's own: the slot left this node

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
        self._sent.clear()
        self._events.lost(reason)

