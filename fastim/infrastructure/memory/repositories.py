"""In-memory repositories with the same behaviour as the Redis ones, TTLs included."""

from __future__ import annotations

import dataclasses
import math
import secrets
from collections.abc import Iterable

from fastim.domain.errors import RecallWindowExpired
from fastim.domain.model import (
    Appended,
    Event,
    GroupSummary,
    Joined,
    Message,
    Page,
    Recall,
    RecallTarget,
    Tail,
    message_id,
    parse_message_id,
)
from fastim.domain.ports import Broker, Clock
from fastim.infrastructure.memory.expiring import ExpiringDict
from fastim.infrastructure.streams import EPOCH_BYTES, accounted_tail


def list_range(items: list[Message], start: int, end: int, limit: int) -> list[Message]:
    """Redis LRANGE semantics (inclusive bounds, negative ones counted from the end), at most ``limit`` items."""
    size = len(items)
    if start < 0:
        start = max(size + start, 0)
    if end < 0:
        end = size + end
    end = min(end, size - 1, start + limit - 1)
    if start > end:
        return []
    return items[start : end + 1]


def _scan(items: list[Message], low: int, high: int, user_id: str, ts: int) -> int | None:
    """The newest index in ``low..high`` holding the message (user_id, ts)."""
    for index in range(high, low - 1, -1):
        message = items[index]
        if message.ts == ts and message.user_id == user_id:
            return index
    return None


def find_anchor(items: list[Message], user_id: str, ts: int, window: int) -> int | None:
    """Where the message (user_id, ts) is, searched like the Redis scripts search: the newest
    ``window`` messages, then ``window`` on either side of where ``ts`` falls in the older part."""
    size = len(items)
    newest = max(0, size - window)
    index = _scan(items, newest, size - 1, user_id, ts)
    if index is not None or newest == 0:
        return index
    low, high = 0, newest - 1  # the last index whose ts is not after the anchor's
    while low < high:
        middle = (low + high + 1) // 2
        if items[middle].ts <= ts:
            low = middle
        else:
            high = middle - 1
    return _scan(items, max(0, low - window), min(newest - 1, low + window), user_id, ts)


class _Stream:
    """Where a group's numbering stands."""

    __slots__ = ("epoch", "seq")

    def __init__(self) -> None:
        self.epoch = secrets.token_hex(EPOCH_BYTES)
        self.seq = 0


class MemoryMessageRepository:
    """The Redis repository's behaviour in process: streams, TTLs, recall events, announcements on ``broker``."""

    def __init__(self, clock: Clock, broker: Broker | None = None) -> None:
        self._lists: ExpiringDict[list[Message]] = ExpiringDict(clock)
        self._streams: ExpiringDict[_Stream] = ExpiringDict(clock)
        self._recalls: ExpiringDict[list[Recall]] = ExpiringDict(clock)
        self._broker = broker  # the node's: announcing is part of storing (None: nobody listens)

    def _stream(self, group_id: str, ttl_seconds: int | None) -> _Stream:
        stream = self._streams.get(group_id)
        if stream is None:
            stream = _Stream()
        self._streams.set(group_id, stream, ttl_seconds)
        return stream

    async def append(self, message: Message, ttl_seconds: int, max_length: int = 0) -> Appended:
        ttl = ttl_seconds if ttl_seconds > 0 else None
        stream = self._stream(message.group_id, ttl)
        stream.seq += 1
        stored = dataclasses.replace(message, seq=stream.seq, id=message_id(stream.epoch, stream.seq))
        items = self._lists.get(message.group_id) or []
        items.append(stored)
        if max_length > 0 and len(items) > max_length:
            del items[: len(items) - max_length]
        self._lists.set(message.group_id, items, ttl)
        await self._announce(stored)
        return Appended(stored, len(items))

    async def find(self, draft: Message, window: int) -> Message | None:
        items = self._lists.get(draft.group_id) or []
        index = find_anchor(items, draft.user_id, draft.ts, window)
        if index is None or items[index].info != draft.info:
            return None
        return items[index]

    async def newest(self, group_id: str, count: int) -> Page:
        items = self._lists.get(group_id) or []
        stream = self._streams.get(group_id)
        return Page(
            messages=items[-count:] if count > 0 else [],
            total=len(items),
            seq=stream.seq if stream else 0,
            epoch=stream.epoch if stream else "",
        )

    async def tail(self, group_id: str, since: int, limit: int) -> Tail:
        stream = self._streams.get(group_id)
        items = self._lists.get(group_id) or []
        if stream is None:
            return Tail([], 0, "", complete=since == 0, total=len(items))
        count = stream.seq - since
        if count <= 0 or count > limit:
            return Tail([], stream.seq, stream.epoch, complete=count == 0, total=len(items))
        recalls = (self._recalls.get(group_id) or [])[-count:]
        events, complete = accounted_tail(items[-count:], recalls, since, stream.seq, stream.epoch)
        return Tail(events, stream.seq, stream.epoch, complete, len(items))

    async def range(self, group_id: str, start: int, end: int, limit: int) -> list[Message]:
        return list_range(self._lists.get(group_id) or [], start, end, limit)

    async def before(self, group_id: str, user_id: str, ts: int, count: int, window: int) -> list[Message] | None:
        items = self._lists.get(group_id) or []
        index = find_anchor(items, user_id, ts, window)
        if index is None:
            return None
        return items[max(index - count, 0) : index]

    async def remove(self, target: RecallTarget, window: int, ttl_seconds: int, keep_recalls: int) -> Recall | None:
        group_id = target.group_id
        items = self._lists.get(group_id) or []
        index = self._locate(items, target, window)
        if index is None:
            return None
        message = items[index]
        if message.ts < target.not_before_ms:
            raise RecallWindowExpired("the message is older than the recall window")
        del items[index]
        if not items:
            self._lists.delete(group_id)  # Redis deletes a list that becomes empty
        ttl = ttl_seconds if ttl_seconds > 0 else None
        stream = self._stream(group_id, ttl)
        stream.seq += 1
        recall = Recall(group_id, message.user_id, message.ts, id=message.id, seq=stream.seq, epoch=stream.epoch)
        recalls = self._recalls.get(group_id) or []
        recalls.append(recall)
        del recalls[: max(0, len(recalls) - keep_recalls)]
        self._recalls.set(group_id, recalls, ttl)
        await self._announce(recall)
        return recall

    def _locate(self, items: list[Message], target: RecallTarget, window: int) -> int | None:
        if target.id is None:
            return find_anchor(items, target.user_id, target.ts, window)
        parsed = parse_message_id(target.id)
        if parsed is None:
            return None
        index = find_by_seq(items, parsed[1])
        if index is None or items[index].id != target.id:
            return None
        if target.user_id is not None and items[index].user_id != target.user_id:
            return None  # None: a moderator's recall, of anyone's message
        return index

    async def summaries(self, group_ids: Iterable[str]) -> list[GroupSummary]:
        summaries = []
        for group_id in group_ids:
            items = self._lists.get(group_id) or []
            summaries.append(GroupSummary(group_id, items[-1] if items else None, len(items)))
        return summaries

    async def _announce(self, event: Event) -> None:
        if self._broker is not None:
            await self._broker.publish(event)


def find_by_seq(items: list[Message], seq: int) -> int | None:
    """Where the message with ``seq`` is: a list is appended in seq order, so a binary search finds it."""
    low, high = 0, len(items) - 1
    while low <= high:
        middle = (low + high) // 2
        found = items[middle].seq
        if found is None or found < seq:  # a message without seq (fast-im's) counts as older
            low = middle + 1
        elif found > seq:
            high = middle - 1
        else:
            return middle
    return None


class MemoryMembershipRepository:
    def __init__(self) -> None:
        self._groups: dict[str, set[str]] = {}

    async def join(self, user_id: str, group_id: str, max_groups: int = 0) -> Joined:
        groups = self._groups.setdefault(user_id, set())
        if group_id in groups:
            return Joined.ALREADY
        if max_groups and len(groups) >= max_groups:
            return Joined.FULL
        groups.add(group_id)
        return Joined.ADDED

    async def leave(self, user_id: str, group_id: str) -> bool:
        groups = self._groups.get(user_id)
        if not groups or group_id not in groups:
            return False
        groups.discard(group_id)
        if not groups:
            del self._groups[user_id]  # Redis deletes a set that becomes empty
        return True

    async def groups_of(self, user_id: str) -> list[str]:
        return sorted(self._groups.get(user_id, ()))

    async def count(self, user_id: str) -> int:
        return len(self._groups.get(user_id, ()))

    async def is_member(self, user_id: str, group_id: str) -> bool:
        return group_id in self._groups.get(user_id, ())


class MemoryTokenRepository:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._tokens: ExpiringDict[str] = ExpiringDict(clock)

    async def issue(self, user_id: str, token: str, ttl_seconds: int) -> None:
        self._tokens.set(user_id, token, ttl_seconds if ttl_seconds > 0 else None)

    async def check_and_renew(self, user_id: str, token: str, ttl_seconds: int) -> bool:
        if self._tokens.get(user_id) != token:
            return False
        self._tokens.expire(user_id, ttl_seconds if ttl_seconds > 0 else None)
        return True

    async def remaining(self, user_id: str, token: str) -> float | None:
        if self._tokens.get(user_id) != token:
            return None
        deadline = self._tokens.deadline_ms(user_id)
        return math.inf if deadline is None else (deadline - self._clock.now_ms()) / 1000

    async def revoke(self, user_id: str, token: str) -> bool:
        if self._tokens.get(user_id) != token:
            return False
        self._tokens.delete(user_id)
        return True

    async def revoke_all(self, user_id: str) -> bool:
        if self._tokens.get(user_id) is None:
            return False
        self._tokens.delete(user_id)
        return True


class MemoryStorage:
    """Process memory always answers."""

    async def ping(self) -> bool:
        return True
