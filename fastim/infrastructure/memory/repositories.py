"""In-memory repositories with the same behaviour as the Redis ones, TTLs included."""

from __future__ import annotations

import math
from collections.abc import Iterable

from fastim.domain.model import GroupSummary, Joined, Message, Page
from fastim.domain.ports import Clock
from fastim.infrastructure.memory.expiring import ExpiringDict


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


class MemoryMessageRepository:
    def __init__(self, clock: Clock) -> None:
        self._lists: ExpiringDict[list[Message]] = ExpiringDict(clock)

    async def append(self, message: Message, ttl_seconds: int, max_length: int = 0) -> int:
        items = self._lists.get(message.group_id) or []
        items.append(message)
        if max_length > 0 and len(items) > max_length:
            del items[: len(items) - max_length]
        self._lists.set(message.group_id, items, ttl_seconds)
        return len(items)

    async def newest(self, group_id: str, count: int) -> Page:
        items = self._lists.get(group_id) or []
        return Page(messages=items[-count:] if count > 0 else [], total=len(items))

    async def range(self, group_id: str, start: int, end: int, limit: int) -> list[Message]:
        return list_range(self._lists.get(group_id) or [], start, end, limit)

    async def before(self, group_id: str, user_id: str, ts: int, count: int, window: int) -> list[Message] | None:
        items = self._lists.get(group_id) or []
        index = find_anchor(items, user_id, ts, window)
        if index is None:
            return None
        return items[max(index - count, 0) : index]

    async def remove(self, group_id: str, user_id: str, ts: int, window: int) -> Message | None:
        items = self._lists.get(group_id) or []
        index = find_anchor(items, user_id, ts, window)
        if index is None:
            return None
        removed = items.pop(index)
        if not items:
            self._lists.delete(group_id)  # Redis deletes a list that becomes empty
        return removed

    async def summaries(self, group_ids: Iterable[str]) -> list[GroupSummary]:
        summaries = []
        for group_id in group_ids:
            items = self._lists.get(group_id) or []
            summaries.append(GroupSummary(group_id, items[-1] if items else None, len(items)))
        return summaries


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


class MemoryStorage:
    """Process memory always answers."""

    async def ping(self) -> bool:
        return True
