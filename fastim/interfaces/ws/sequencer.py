"""Forwarding each group's events in seq order, once: duplicates dropped, gaps filled from storage.

Storage announces a group's events in seq order, but a node can still miss
some: a pub/sub connection that dropped or stalled, a node that subscribed a
moment late. The sequencer sits between the broker and the Hub: an event
whose seq follows the last one forwarded goes on at once; one already
forwarded is dropped; one that skips ahead is held while the events between
are read from storage, then everything goes on in order. A new epoch (the
group's stream restarted) starts the count afresh. Events without a seq
(stored by fast-im's own nodes) go on as they come, and so do presence
events, which are not of the stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from fastim.domain.errors import StorageUnavailable
from fastim.domain.messages import Messages
from fastim.domain.model import Event, Recall, epoch_of, parse_message_id
from fastim.interfaces.metrics import Metrics

logger = logging.getLogger(__name__)

# Events held per group while a gap is repaired; past this the oldest go (storage has them all,
# the repair reads them back).
MAX_HELD = 10_000
# A repair that cannot read storage tries again after these many seconds, this many times, then
# forwards what it holds and skips the gap (clients can still resume it by seq later).
REPAIR_RETRY_S = (0.1, 0.5, 1.0, 2.0)


class Sequencer:
    def __init__(self, messages: Messages, forward: Callable[[str, Event], None], metrics: Metrics) -> None:
        self._messages = messages
        self._forward = forward
        self._metrics = metrics
        self._last: dict[str, tuple[str, int]] = {}  # group -> (epoch, seq) of the last event forwarded
        self._held: dict[str, list[Event]] = {}  # group -> events waiting for a repair, as they came
        self._repairs: dict[str, asyncio.Task[None]] = {}
        # group -> (epoch, seq) of the first event forwarded, when it came before any read placed the stream
        self._began: dict[str, tuple[str, int]] = {}

    def last(self, group_id: str) -> tuple[str, int] | None:
        return self._last.get(group_id)

    def baseline(self, group_id: str, epoch: str, seq: int) -> tuple[str, int] | None:
        """Where a read from storage found the stream at (epoch, seq): the start, when nothing came through yet.

        When the node's forwarding began, before any read, with an event past the
        one after ``seq``, the events between were published after the read and
        before the node heard the group's channel (a subscription Redis had not
        confirmed yet): nothing forwards them. The first forwarded event's
        (epoch, seq) is returned then, and the caller's opening must bring what
        lies between itself; None when nothing is missing.
        """
        if group_id not in self._last:
            self._last[group_id] = (epoch, seq)
            return None
        began = self._began.get(group_id)
        if began is None:
            return None
        began_epoch, began_seq = began
        if (epoch == began_epoch and seq + 1 < began_seq) or (not epoch and began_seq > 1):  # "": nothing stored yet
            return began
        return None

    def forget(self, group_id: str) -> None:
        """The node left the group: what it knew of the stream is stale from now on."""
        self._last.pop(group_id, None)
        self._began.pop(group_id, None)
        self._held.pop(group_id, None)
        repair = self._repairs.pop(group_id, None)
        if repair is not None:
            repair.cancel()

    def accept(self, group_id: str, event: Event) -> None:
        seq = event.seq
        if seq is None:  # fast-im's messages, presence events: not in the stream, never held
            self._forward(group_id, event)
            return
        if group_id in self._repairs:
            self._hold(group_id, event)
            return
        last = self._last.get(group_id)
        epoch = epoch_of(event) or (last[0] if last else "")
        if last is None or (epoch != last[0] and seq == 1):
            self._last[group_id] = (epoch, seq)  # the first event heard, or a restarted stream's first
            if last is None:
                self._began[group_id] = (epoch, seq)  # what came before it, an opening brings (baseline)
            self._forward(group_id, event)
        elif epoch != last[0]:
            # A restarted (or new) stream heard past its start: its first events went out on other
            # nodes' announcements that have not come yet (SQL storage announces after commit).
            self._last[group_id] = (epoch, 0)
            self._hold(group_id, event)
            self.repair(group_id)
        elif seq == last[1] + 1:
            self._last[group_id] = (epoch, seq)
            self._forward(group_id, event)
        elif seq > last[1] + 1:
            self._hold(group_id, event)
            self.repair(group_id)
        # else: forwarded already (a repair read it before the channel brought it)

    def repair(self, group_id: str) -> None:
        """Read what came after the last forwarded event from storage and forward it (if not already doing so)."""
        if group_id in self._last and group_id not in self._repairs:
            self._repairs[group_id] = asyncio.get_running_loop().create_task(self._repair(group_id))

    async def close(self) -> None:
        repairs = list(self._repairs.values())
        for task in repairs:
            task.cancel()
        if repairs:
            await asyncio.wait(repairs)

    def _hold(self, group_id: str, event: Event) -> None:
        held = self._held.setdefault(group_id, [])
        held.append(event)
        if len(held) > MAX_HELD:
            del held[: len(held) - MAX_HELD]

    async def _repair(self, group_id: str) -> None:
        try:
            for delay in (*REPAIR_RETRY_S, None):
                try:
                    await self._fill(group_id)
                    return
                except StorageUnavailable as exc:
                    if delay is None:
                        logger.warning("group %s: cannot read its missed events (%s); skipping them", group_id, exc)
                        self._release_held(group_id, gap_ok=True)
                        return
                    await asyncio.sleep(delay)
        finally:
            if self._repairs.get(group_id) is asyncio.current_task():
                del self._repairs[group_id]
            if self._held.get(group_id):
                self.repair(group_id)  # more came, past what this repair read

    async def _fill(self, group_id: str) -> None:
        epoch, since = self._last[group_id]
        tail = await self._messages.tail(group_id, since)
        if group_id not in self._last:
            return  # the node left the group meanwhile
        if tail.epoch and tail.epoch != epoch:
            self._last[group_id] = (tail.epoch, 0)  # the stream restarted: take it from its start
            epoch, since = tail.epoch, 0
            tail = await self._messages.tail(group_id, 0)
            if group_id not in self._last:
                return
        heard = {event.seq for event in self._held.get(group_id, ())}  # came through the channel after all
        start, covered, forwarded = since, set(), 0
        for event in tail.events:
            if event.seq is not None and event.seq > since:
                self._last[group_id] = (epoch, event.seq)
                self._forward(group_id, event)
                since = event.seq
                forwarded += 1
                covered.add(event.seq)
                recalled = parse_message_id(event.id) if isinstance(event, Recall) and event.id else None
                if recalled is not None and recalled[0] == epoch:
                    covered.add(recalled[1])  # a recalled message is accounted for by its recall
        self._metrics.repaired_events.inc(len(covered - heard))
        if not tail.complete:
            missing = tail.seq - start if not tail.events else sum(
                1 for seq in range(start + 1, tail.seq + 1) if seq not in covered
            )
            self._metrics.unrecovered_events.inc(missing)
            logger.warning("group %s: %d events after seq %d are no longer in storage; skipping them",
                           group_id, missing, start)
            self._last[group_id] = (epoch, max(since, tail.seq))
        # Storage holds every event it announced, so a complete read covers what was held up to it;
        # a read that brought nothing while events wait past a gap would only loop: skip the gap.
        self._release_held(group_id, gap_ok=not tail.complete or forwarded == 0)

    def _release_held(self, group_id: str, gap_ok: bool) -> None:
        """Forward the held events that now follow on; with ``gap_ok``, skip over what is missing."""
        held = sorted(self._held.pop(group_id, ()), key=lambda event: event.seq)
        for index, event in enumerate(held):
            last = self._last.get(group_id)
            if last is None:
                return
            if event.seq <= last[1]:
                continue
            if event.seq == last[1] + 1 or gap_ok:
                self._last[group_id] = (last[0], event.seq)
                self._forward(group_id, event)
            else:  # still a gap: wait for another repair
                self._held[group_id] = held[index:]
                return
