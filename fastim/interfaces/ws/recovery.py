"""What a chat socket sends on open: the newest page, or, for a client that resumes, every event it missed.

A client that resumes gives the seq of the last event it saw and the epoch
of the stream it saw it in. When storage still holds every event after that
seq (and the epoch is the same), the opening frame lists exactly those, oldest
first, and says ``recovered``; otherwise it lists the newest page and says it
did not recover. Either way it carries the stream's latest seq and its epoch,
from which live events continue.

Reads of one group are shared: when a node restarts, its clients all come
back at once, and every client of a group that asks while a read of that
group is in flight (or a fresh one is at hand) is served by that one read.
A shared read serves a socket only if it is at least as new as what the Hub
had forwarded when the socket joined, so nothing falls between the read and
live delivery.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from fastim.domain.messages import Messages
from fastim.domain.model import Event, Page, Tail
from fastim.interfaces.metrics import Metrics
from fastim.interfaces.ws.sequencer import Sequencer

# A finished read keeps serving sockets of its group this long, while nothing newer was forwarded.
FRESH_S = 1.0

R = TypeVar("R", Page, Tail)


@dataclass(frozen=True)
class Opening:
    """The opening frame's content."""

    events: list[Event]
    total: int
    seq: int
    epoch: str
    recovered: bool | None  # None: the client did not ask to resume


class _Shared(Generic[R]):
    """One read of a group, awaited by every socket it serves."""

    __slots__ = ("since", "task", "finished_at")

    def __init__(self, since: int, task: asyncio.Task[R]) -> None:
        self.since = since  # for tails: the seq read after
        self.task = task
        self.finished_at: float | None = None


class Recovery:
    def __init__(self, messages: Messages, sequencer: Sequencer, metrics: Metrics) -> None:
        self._messages = messages
        self._sequencer = sequencer
        self._reads = metrics.opening_reads
        self._pages: dict[str, _Shared[Page]] = {}
        self._tails: dict[str, _Shared[Tail]] = {}

    async def opening(self, group_id: str, since: int | None, epoch: str | None) -> Opening:
        """What to send a socket that has just joined the group's room (so live events reach it from now on)."""
        forwarded = self._sequencer.last(group_id)
        if since is not None:
            tail = await self._shared(
                self._tails, group_id, since, forwarded, lambda: self._messages.tail(group_id, since),
                fits=lambda read_since, tail: tail.complete or read_since == since,  # too far for an older since
            )
            same_stream = since == 0 or (epoch is not None and epoch == tail.epoch)
            if same_stream and tail.complete and since <= tail.seq:
                events = [event for event in tail.events if event.seq is not None and event.seq > since]
                return await self._bridged(group_id, Opening(events, tail.total, tail.seq, tail.epoch, recovered=True))
        page = await self._shared(
            self._pages, group_id, 0, forwarded, lambda: self._messages.latest(group_id), fits=lambda _, page: True
        )
        opening = Opening(list(page.messages), page.total, page.seq, page.epoch, recovered=None if since is None else False)
        return await self._bridged(group_id, opening)

    async def _bridged(self, group_id: str, opening: Opening) -> Opening:
        """``opening``, and the events between its read and the first one the node forwarded, if any.

        See :meth:`Sequencer.baseline`: the node may have begun forwarding the
        group's events past the read's position. The socket gets what lies
        between in its opening frame, whose ``seq`` is then the event before
        the first forwarded one, so that nothing is missed or sent twice.
        """
        began = self._sequencer.baseline(group_id, opening.epoch, opening.seq)
        if began is None:
            return opening
        epoch, first = began
        since = opening.seq if opening.epoch == epoch else 0
        tail = await self._messages.tail(group_id, since)
        if tail.epoch != epoch:
            return opening  # the stream restarted since: the Sequencer's repair follows the new one
        bridge = [event for event in tail.events if event.seq is not None and since < event.seq < first]
        recovered = opening.recovered if tail.complete or opening.recovered is None else False
        return Opening([*opening.events, *bridge], tail.total, first - 1, epoch, recovered)

    async def _shared(
        self,
        reads: dict[str, _Shared[R]],
        group_id: str,
        since: int,
        forwarded: tuple[str, int] | None,
        read: Callable[[], Awaitable[R]],
        fits: Callable[[int, R], bool],
    ) -> R:
        """A read of the group serving this socket: the one in flight or fresh, if it fits, else a new one."""
        loop = asyncio.get_running_loop()
        shared = reads.get(group_id)
        # A finished read serves later sockets only while the node follows the group's stream (it
        # forwarded events since, and the read covers them): a group the node left and joined again
        # may have had any number of events meanwhile.
        usable = shared is not None and shared.since <= since and (
            shared.finished_at is None or (forwarded is not None and loop.time() - shared.finished_at < FRESH_S)
        )
        if usable:
            result = await asyncio.shield(shared.task)
            if _covers(result, forwarded) and fits(shared.since, result):
                return result
        self._reads.labels("tail" if reads is self._tails else "page").inc()
        shared = _Shared(since, loop.create_task(read()))
        shared.task.add_done_callback(lambda _: self._finished(reads, group_id, shared))
        reads[group_id] = shared
        return await asyncio.shield(shared.task)

    def _finished(self, reads: dict[str, _Shared[R]], group_id: str, shared: _Shared[R]) -> None:
        if shared.task.cancelled() or shared.task.exception() is not None:
            if reads.get(group_id) is shared:
                del reads[group_id]  # a failed read serves nobody later
            return
        loop = asyncio.get_running_loop()
        shared.finished_at = loop.time()
        loop.call_later(FRESH_S, self._expire, reads, group_id, shared)

    @staticmethod
    def _expire(reads: dict[str, _Shared[R]], group_id: str, shared: _Shared[R]) -> None:
        if reads.get(group_id) is shared:
            del reads[group_id]


def _covers(result: Page | Tail, forwarded: tuple[str, int] | None) -> bool:
    """Whether a read shows at least every event forwarded before the socket joined (another epoch: unknown)."""
    if forwarded is None:
        return True
    epoch, seq = forwarded
    return result.epoch == epoch and result.seq >= seq
