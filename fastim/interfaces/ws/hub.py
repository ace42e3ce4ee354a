"""The Hub: this node's sockets by group, and the one broker subscription per group they need."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Iterable
from typing import Any, Protocol

from fastim.domain.codec import encode_event
from fastim.domain.messages import Messages
from fastim.domain.model import Event, Message, PresenceChanged
from fastim.domain.ports import Broker, Clock
from fastim.interfaces.metrics import Metrics
from fastim.interfaces.ws.frames import presence_frames, text_frame
from fastim.interfaces.ws.sequencer import Sequencer

logger = logging.getLogger(__name__)

# A busy group is flushed at most once per its last flush's cost, so writing to
# its sockets can take at most about half of the node's time and batches grow
# with the load; never later than [im] coalescing_window_ms, the most a batch
# may add to latency.
DEFAULT_COALESCING_WINDOW_S = 0.015


class Batch:
    """The events of one group fanned out together, with their frames built once for every socket."""

    __slots__ = ("events", "frames", "data", "presence")

    def __init__(self) -> None:
        self.events: list[Event] = []
        # Per event, its complete WebSocket text frame (a presence event's: its few frames, back to back).
        self.frames: list[bytes] = []
        self.data = b""  # the frames back to back: one write per socket, still one frame per event
        self.presence = 0  # presence events among the events (not of the stream: not counted as such)

    def add(self, event: Event) -> None:
        self.events.append(event)
        if isinstance(event, PresenceChanged):
            self.presence += 1
            self.frames.append(presence_frames(event))
        else:
            self.frames.append(text_frame(encode_event(event).encode("utf-8")))

    def seal(self) -> None:
        self.data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)


class Member(Protocol):
    """A local socket that wants a group's events."""

    def deliver(self, group_id: str, batch: Batch) -> None:
        """Take a batch of the group's events, oldest first. Must not block."""
        ...


class Writer(Member, Protocol):
    """A member that, once live, takes the batch's bytes as they are (a chat socket past its snapshot)."""

    def write_frames(self, data: bytes) -> None:
        """Queue complete WebSocket frames. Must not block."""
        ...


class Hub:
    """Subscribes ``mq:{g}`` while at least one local member is in ``g``, and fans events out.

    Each event is decoded once (by the broker), encoded and framed once (here),
    and the same bytes go to every local member of the group. A quiet group's
    event goes out at the end of the loop turn it arrived in. A busy group's
    events gather into one batch for a window as long as its last flush took
    (at most ``max_window_s``): one write per socket per batch instead
    of one per message, still one WebSocket frame per event. With
    ``max_window_s = 0`` only the events of one loop turn share a write.
    The cost of an event on this node depends only on this node's members of
    that group: not on the number of groups, nor on other nodes' clients.
    """

    def __init__(
        self,
        broker: Broker,
        messages: Messages,
        metrics: Metrics,
        clock: Clock,
        max_window_s: float = DEFAULT_COALESCING_WINDOW_S,
    ) -> None:
        self._broker = broker
        self._max_window_s = max_window_s
        self._messages = messages
        self._metrics = metrics
        self._clock = clock
        self._rooms: dict[str, set[Member]] = {}  # every member, by group
        self._writers: dict[str, set[Writer]] = {}  # live chat sockets: they take the batch's bytes as they are
        self._others: dict[str, set[Member]] = {}  # the rest: group lists, chat sockets before their snapshot
        self._pending: set[asyncio.Task[None]] = set()
        self._outbox: dict[str, Batch] = {}  # batches being filled, by group
        self._ready: list[str] = []  # groups whose batch goes out at the end of this loop turn
        self._next_flush: dict[str, float] = {}  # loop time before which a busy group's batch waits
        # Events reach _enqueue in seq order, once, gaps filled from storage.
        self.sequencer = Sequencer(messages, self._enqueue, metrics)
        metrics.groups.set_function(lambda: len(self._rooms))
        broker.on_resume(self._catch_up)

    def members(self, group_id: str) -> frozenset[Member]:
        return frozenset(self._rooms.get(group_id, ()))

    async def join(self, group_id: str, member: Member) -> None:
        """Add ``member`` to the group; the group's first member subscribes the node to it.

        Every subscribe is paired with exactly one unsubscribe (in :meth:`leave`),
        and brokers count listeners, so a quick leave-and-rejoin cannot lose
        the subscription whatever order the two calls complete in.
        """
        await self.join_many((group_id,), member)

    async def join_many(self, group_ids: Iterable[str], member: Member) -> None:
        """:meth:`join` each group; the groups new to the node are subscribed in one round trip."""
        new = []
        for group_id in group_ids:
            room = self._rooms.get(group_id)
            if room is None:
                room = self._rooms[group_id] = set()
                new.append(group_id)
            room.add(member)
            self._others.setdefault(group_id, set()).add(member)
        if new:
            await self._broker.subscribe_many(new, self._on_event)

    def go_live(self, group_id: str, writer: Writer) -> None:
        """From now on ``writer`` gets each batch's bytes through ``write_frames`` instead of ``deliver``."""
        others = self._others.get(group_id)
        if others is not None and writer in others:
            others.discard(writer)
            self._writers.setdefault(group_id, set()).add(writer)

    def leave(self, group_id: str, member: Member) -> None:
        """Remove ``member``; the group's last member unsubscribes the node (in the background)."""
        self.leave_many((group_id,), member)

    def leave_many(self, group_ids: Iterable[str], member: Member) -> None:
        """:meth:`leave` each group; the groups the node no longer needs are unsubscribed in one round trip."""
        emptied = [group_id for group_id in group_ids if self._remove(group_id, member)]
        if emptied:
            self._spawn(self._broker.unsubscribe_many(emptied, self._on_event))

    def _remove(self, group_id: str, member: Member) -> bool:
        """Take ``member`` out of the group; whether that emptied the room."""
        room = self._rooms.get(group_id)
        if room is None or member not in room:
            return False
        room.discard(member)
        for part in (self._writers.get(group_id), self._others.get(group_id)):
            if part is not None:
                part.discard(member)  # type: ignore[arg-type]
        if room:
            return False
        del self._rooms[group_id]
        self._writers.pop(group_id, None)
        self._others.pop(group_id, None)
        self._outbox.pop(group_id, None)  # nobody left to write to; a new room starts afresh
        self._next_flush.pop(group_id, None)
        self.sequencer.forget(group_id)
        return True

    async def close(self) -> None:
        """Stop repairs and wait for pending unsubscribes; the broker itself is closed by the container."""
        await self.sequencer.close()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def _catch_up(self, groups: frozenset[str]) -> None:
        """After a broker outage, read from storage, by seq, what each group's channel brought meanwhile."""
        for group_id in groups & self._rooms.keys():
            self.sequencer.repair(group_id)

    def _on_event(self, group_id: str, event: Event) -> None:
        if group_id in self._rooms:
            self.sequencer.accept(group_id, event)

    def _enqueue(self, group_id: str, event: Event) -> None:
        if group_id not in self._rooms:
            return
        batch = self._outbox.get(group_id)
        if batch is None:
            batch = self._outbox[group_id] = Batch()
            loop = asyncio.get_running_loop()
            due = self._next_flush.get(group_id, 0.0)
            if due <= loop.time():  # a quiet group: out at the end of this turn
                if not self._ready:
                    loop.call_soon(self._flush_ready)
                self._ready.append(group_id)
            else:  # a busy group: events gather until its window ends
                loop.call_at(due, self._flush, group_id)
        batch.add(event)

    def _flush_ready(self) -> None:
        ready, self._ready = self._ready, []
        for group_id in ready:
            self._flush(group_id)

    def _flush(self, group_id: str) -> None:
        batch = self._outbox.pop(group_id, None)
        room = self._rooms.get(group_id)
        if batch is None or not room:
            return
        batch.seal()
        started = time.perf_counter()
        writers = self._writers.get(group_id, ())
        data = batch.data
        for writer in tuple(writers):  # a socket may leave while we deliver
            try:
                writer.write_frames(data)
            except Exception:
                logger.exception("delivery to a socket of group %s failed", group_id)
        for member in tuple(self._others.get(group_id, ())):
            try:
                member.deliver(group_id, batch)
            except Exception:
                logger.exception("delivery to a member of group %s failed", group_id)
        cost = time.perf_counter() - started
        self._next_flush[group_id] = asyncio.get_running_loop().time() + min(cost, self._max_window_s)
        count = len(batch.events) - batch.presence
        self._metrics.events_fanned_out.inc(count)
        self._metrics.deliveries.inc(count * len(room))
        now_ms = self._clock.now_ms()
        for event in batch.events:
            if isinstance(event, Message):
                self._metrics.fanout_latency.observe(max(0, now_ms - event.ts) / 1000)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._pending.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("unsubscribe failed: %s", task.exception())
