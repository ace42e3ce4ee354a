"""The Hub: this node's sockets by group, and the one broker subscription per group they need."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Protocol

from fastim.domain.codec import encode_event
from fastim.domain.model import Event
from fastim.domain.ports import Broker

logger = logging.getLogger(__name__)


class Member(Protocol):
    """A local socket that wants a group's events."""

    def deliver(self, group_id: str, event: Event, payload: str) -> None:
        """Take one event; ``payload`` is its wire text, shared by every member. Must not block."""
        ...


class Hub:
    """Subscribes ``mq:{g}`` while at least one local member is in ``g``, and fans events out.

    Per event the Hub encodes the wire text once and hands the same string to
    each local member of the group, so the cost of an event on this node
    depends only on this node's members of that group: not on the number of
    groups, nor on the clients of other nodes (their nodes do their own part).
    """

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._rooms: dict[str, set[Member]] = {}
        self._pending: set[asyncio.Task[None]] = set()

    def members(self, group_id: str) -> frozenset[Member]:
        return frozenset(self._rooms.get(group_id, ()))

    @property
    def groups(self) -> frozenset[str]:
        return frozenset(self._rooms)

    async def join(self, group_id: str, member: Member) -> None:
        """Add ``member`` to the group; the group's first member subscribes the node to it.

        Every subscribe is paired with exactly one unsubscribe (in :meth:`leave`),
        and brokers count listeners, so a quick leave-and-rejoin cannot lose
        the subscription whatever order the two calls complete in.
        """
        room = self._rooms.get(group_id)
        if room is None:
            room = self._rooms[group_id] = set()
            room.add(member)
            await self._broker.subscribe(group_id, self._on_event)
        else:
            room.add(member)

    def leave(self, group_id: str, member: Member) -> None:
        """Remove ``member``; the group's last member unsubscribes the node (in the background)."""
        room = self._rooms.get(group_id)
        if room is None or member not in room:
            return
        room.discard(member)
        if not room:
            del self._rooms[group_id]
            self._spawn(self._broker.unsubscribe(group_id, self._on_event))

    async def close(self) -> None:
        """Wait for pending unsubscribes; the broker itself is closed by the container."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def _on_event(self, group_id: str, event: Event) -> None:
        room = self._rooms.get(group_id)
        if not room:
            return
        payload = encode_event(event)
        for member in tuple(room):  # a member may leave while we deliver
            try:
                member.deliver(group_id, event, payload)
            except Exception:
                logger.exception("delivery to a member of group %s failed", group_id)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._pending.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("unsubscribe failed: %s", task.exception())
