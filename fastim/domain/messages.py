"""The Messages service: posting, reading and recalling a group's messages."""

from __future__ import annotations

from collections.abc import Collection

from fastim.domain.errors import InvalidArgument, MessageNotFound, RecallWindowExpired
from fastim.domain.model import History, Message, Page, Recall
from fastim.domain.ports import Broker, Clock, MessageRepository


CATCH_UP_LIMIT = 200  # messages re-read per group after an outage: more than a busy room sends in the 2 s backoff cap
DEFAULT_PAGE_MAX = 200  # [im] history_page_max


class Messages:
    def __init__(
        self,
        repository: MessageRepository,
        broker: Broker,
        clock: Clock,
        *,
        message_timeout: int,
        list_num: int,
        recall_time_limit: int,
        history_max: int = 0,
        history_page_max: int = DEFAULT_PAGE_MAX,
    ) -> None:
        self._repository = repository
        self._broker = broker
        self._clock = clock
        self._message_timeout = message_timeout
        self._list_num = list_num
        self._recall_window_ms = recall_time_limit * 1000
        self._history_max = history_max
        self._page_max = history_page_max  # the most messages one read returns, and how far a search goes

    async def post(self, group_id: str, user_id: str, info: str) -> Message:
        """Store a new message, then announce it to the group on every node.

        It is published only once stored, so every message a client receives
        is also in the group's history.
        """
        message = Message(group_id=group_id, user_id=user_id, info=info, ts=self._clock.now_ms())
        await self._repository.append(message, self._message_timeout, self._history_max)
        await self._broker.publish(message)
        return message

    async def latest(self, group_id: str) -> Page:
        """What a chat socket receives on open: the newest ``list_num`` messages and the total."""
        return await self._repository.newest(group_id, self._list_num)

    async def missed(self, group_id: str, since_ts: int, seen: Collection[Message] = ()) -> list[Message]:
        """Messages a node may have missed while its broker was away, oldest first.

        Those among the newest ``CATCH_UP_LIMIT`` stamped ``since_ts`` or later,
        except the ``seen`` ones (delivered already, stamped exactly ``since_ts``).
        """
        page = await self._repository.newest(group_id, CATCH_UP_LIMIT)
        return [m for m in page.messages if m.ts >= since_ts and m not in seen]

    @property
    def page_max(self) -> int:
        return self._page_max

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

    async def recall(self, group_id: str, user_id: str, ts: int) -> Recall:
        """Remove the caller's own message (user_id, ts) while the recall window is open.

        The window is inclusive: a message exactly ``recall_time_limit``
        seconds old may still be recalled. Another user's message never
        matches, since the author is part of the message's identity.
        """
        if self._clock.now_ms() - ts > self._recall_window_ms:
            raise RecallWindowExpired(f"messages older than {self._recall_window_ms // 1000} s cannot be recalled")
        removed = await self._repository.remove(group_id, user_id, ts, self._page_max)
        if removed is None:
            raise MessageNotFound(f"no message of user {user_id} at {ts} in group {group_id}")
        recall = Recall(group_id=group_id, user_id=user_id, ts=ts)
        await self._broker.publish(recall)
        return recall
