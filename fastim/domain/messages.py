"""The Messages service: posting, reading and recalling a group's messages, and reading its stream back."""

from __future__ import annotations

import asyncio

from fastim.domain.errors import (
    InvalidArgument,
    MessageNotFound,
    NotReplicated,
    OutcomeUnknown,
    RecallWindowExpired,
    StorageUnavailable,
)
from fastim.domain.model import History, Message, Page, Recall, RecallTarget, Tail
from fastim.domain.ports import Clock, MessageRepository

DEFAULT_PAGE_MAX = 200  # [im] history_page_max
DEFAULT_RECOVER_MAX = 1000  # [im] recover_max
# How long a send whose outcome is unknown may keep trying to learn it, once it is settled:
# past this its client is told that the outcome is unknown.
SETTLE_LIMIT_S = 10.0
SETTLE_RETRY_S = 0.5


class Messages:
    def __init__(
        self,
        repository: MessageRepository,
        clock: Clock,
        *,
        message_timeout: int,
        list_num: int,
        recall_time_limit: int,
        history_max: int = 0,
        history_page_max: int = DEFAULT_PAGE_MAX,
        recover_max: int = DEFAULT_RECOVER_MAX,
    ) -> None:
        self._repository = repository
        self._clock = clock
        self._message_timeout = message_timeout
        self._list_num = list_num
        self._recall_window_ms = recall_time_limit * 1000
        self._history_max = history_max
        self._page_max = history_page_max  # the most messages one read returns, and how far a search goes
        self._recover_max = recover_max  # the most events a resume or a repair reads back

    @property
    def page_max(self) -> int:
        return self._page_max

    async def post(self, group_id: str, user_id: str, info: str) -> Message:
        """Store a new message as its group's next event; storing announces it to every node.

        The answer is honest: a returned message is stored (and announced); a
        :class:`StorageUnavailable` means it was not stored and never will be.
        When the storage stopped answering after the write was sent, the
        outcome is read back once it is settled; :class:`OutcomeUnknown` only
        when even that cannot be done.
        """
        draft = Message(group_id=group_id, user_id=user_id, info=info, ts=self._clock.now_ms())
        try:
            appended = await self._repository.append(draft, self._message_timeout, self._history_max)
        except NotReplicated:
            raise  # stored: nothing to settle, only its durability is in doubt
        except OutcomeUnknown as unknown:
            return await self._settle(draft, unknown)
        return appended.message

    async def _settle(self, draft: Message, unknown: OutcomeUnknown) -> Message:
        """Wait until the append can no longer happen, then look: stored, or not (and never)."""
        await asyncio.sleep(unknown.settle_after)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + SETTLE_LIMIT_S
        while True:
            try:
                stored = await self._repository.find(draft, self._page_max)
            except StorageUnavailable as exc:
                if loop.time() >= give_up:
                    raise OutcomeUnknown(f"{unknown}; still unknown: {exc}") from exc
                await asyncio.sleep(SETTLE_RETRY_S)
                continue
            if stored is None:
                raise StorageUnavailable(f"{unknown}; it was not stored") from unknown
            return stored

    async def moderate(self, group_id: str, message_id: str) -> Recall:
        """Remove anyone's message, named by id, whatever its age (the application moderates); its recall event."""
        target = RecallTarget(group_id, None, id=message_id)
        recall = await self._repository.remove(target, self._page_max, self._message_timeout, self._recover_max)
        if recall is None:
            raise MessageNotFound(f"no message {message_id} in group {group_id}")
        return recall

    async def position(self, group_id: str) -> Page:
        """Where the group's stream stands and how many messages it holds (no messages read)."""
        return await self._repository.newest(group_id, 0)

    async def latest(self, group_id: str) -> Page:
        """What a chat socket receives on open: the newest ``list_num`` messages, the total and the stream's position."""
        return await self._repository.newest(group_id, self._list_num)

    async def tail(self, group_id: str, since: int) -> Tail:
        """The events after seq ``since`` (at most ``recover_max`` back): for a resume, or to repair a gap."""
        if since < 0:
            raise InvalidArgument("since must not be negative")
        return await self._repository.tail(group_id, since, self._recover_max)

    async def range(self, group_id: str, start: int, end: int) -> History:
        """Messages by list index (LRANGE semantics): the first ``history_page_max`` of the range at most."""
        found = await self._repository.range(group_id, start, end, self._page_max + 1)
        return History(found[: self._page_max], clipped=len(found) > self._page_max)

    async def before(self, group_id: str, user_id: str, ts: int, count: int) -> History:
        """Up to ``count`` (at most ``history_page_max``) messages before the message (user_id, ts).

        ``History.messages`` is ``None`` when that message is not found.
        """
        if count < 0:
            raise InvalidArgument("count must not be negative")
        found = await self._repository.before(group_id, user_id, ts, min(count, self._page_max), self._page_max)
        return History(found, clipped=found is not None and len(found) == self._page_max < count)

    async def recall(self, group_id: str, user_id: str, *, ts: int | None = None, message_id: str | None = None) -> Recall:
        """Remove the caller's own message, named by ``ts`` (fast-im) or by ``message_id``, within the recall window.

        The window is inclusive: a message exactly ``recall_time_limit``
        seconds old may still be recalled. Another user's message never
        matches. The recall is an event of the group's stream, announced as it
        is stored.
        """
        if (ts is None) == (message_id is None):
            raise InvalidArgument("name the message by ts or by id")
        not_before = self._clock.now_ms() - self._recall_window_ms
        if ts is not None and ts < not_before:
            raise RecallWindowExpired(f"messages older than {self._recall_window_ms // 1000} s cannot be recalled")
        target = RecallTarget(group_id, user_id, ts=ts, id=message_id, not_before_ms=not_before)
        try:
            recall = await self._repository.remove(target, self._page_max, self._message_timeout, self._recover_max)
        except RecallWindowExpired:
            raise RecallWindowExpired(f"messages older than {self._recall_window_ms // 1000} s cannot be recalled")
        if recall is None:
            raise MessageNotFound(f"no such message of user {user_id} in group {group_id}")
        return recall
