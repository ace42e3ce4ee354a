"""An in-process Broker: the single-node backend's fan-out, same contract as Redis pub/sub."""

from __future__ import annotations

from collections.abc import Iterable

from fastim.domain.model import Event, Notice
from fastim.domain.ports import EventListener, NoticeListener, ResumeListener
from fastim.infrastructure.listeners import call_each


class MemoryBroker:
    def __init__(self) -> None:
        self._listeners: dict[str, list[EventListener]] = {}
        self._notice_listeners: list[NoticeListener] = []

    @property
    def subscribed_groups(self) -> frozenset[str]:
        return frozenset(self._listeners)

    @property
    def healthy(self) -> bool:
        """In-process delivery cannot fail."""
        return True

    async def publish(self, event: Event) -> None:
        listeners = self._listeners.get(event.group_id, ())
        await call_each(
            listeners, event.group_id, event, failure="a listener of group %s failed", failure_args=(event.group_id,)
        )

    async def subscribe(self, group_id: str, listener: EventListener) -> None:
        self._listeners.setdefault(group_id, []).append(listener)

    async def unsubscribe(self, group_id: str, listener: EventListener) -> None:
        listeners = self._listeners.get(group_id)
        if not listeners or listener not in listeners:
            return
        listeners.remove(listener)
        if not listeners:
            del self._listeners[group_id]

    async def subscribe_many(self, group_ids: Iterable[str], listener: EventListener) -> None:
        for group_id in group_ids:
            await self.subscribe(group_id, listener)

    async def unsubscribe_many(self, group_ids: Iterable[str], listener: EventListener) -> None:
        for group_id in group_ids:
            await self.unsubscribe(group_id, listener)

    async def notify(self, notice: Notice) -> None:
        await call_each(self._notice_listeners, notice, failure="a notice listener failed")

    async def watch_notices(self, listener: NoticeListener) -> None:
        self._notice_listeners.append(listener)

    def on_resume(self, listener: ResumeListener) -> None:
        """In-process delivery is never interrupted, so there is nothing to resume."""

    async def close(self) -> None:
        self._listeners.clear()
        self._notice_listeners.clear()
