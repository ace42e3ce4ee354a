"""In-memory repositories with the same behaviour as the Redis ones, TTLs included."""

from __future__ import annotations

from collections.abc import Iterable

from fastim.domain.model import GroupSummary, Message, Page
from fastim.domain.ports import Clock
from fastim.infrastructure.memory.expiring import ExpiringDict


def list_range(items: list[Message], start: int, end: int) -> list[Message]:
    """Redis LRANGE semantics: inclusive bounds, negative ones counted from the end."""
    size = len(items)
    if start < 0:
        start = max(size + start, 0)
    if end < 0:
        end = size + end
    end = min(end, size - 1)
    if start > end:
        return []
    return items[start : end + 1]


def find_from_tail(items: list[Message], user_id: str, ts: int) -> int | None:
    for index in range(len(items) - 1, -1, -1):
        message = items[index]
        if message.ts == ts and message.user_id == user_id:
            return index
    return None


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

    async def range(self, group_id: str, start: int, end: int) -> list[Message]:
        return list_range(self._lists.get(group_id) or [], start, end)

    async def before(self, group_id: str, user_id: str, ts: int, count: int) -> list[Message] | None:
        items = self._lists.get(group_id) or []
        index = find_from_tail(items, user_id, ts)
        if index is None:
            return None
        return items[max(index - count, 0) : index]

    async def remove(self, group_id: str, user_id: str, ts: int) -> Message | None:
        items = self._lists.get(group_id) or []
        index = find_from_tail(items, user_id, ts)
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

    async def join(self, user_id: str, group_id: str) -> None:
        self._groups.setdefault(user_id, set()).add(group_id)

    async def groups_of(self, user_id: str) -> list[str]:
        return sorted(self._groups.get(user_id, ()))

    async def is_member(self, user_id: str, group_id: str) -> bool:
        return group_id in self._groups.get(user_id, ())


class MemoryTokenRepository:
    def __init__(self, clock: Clock) -> None:
        self._tokens: ExpiringDict[str] = ExpiringDict(clock)

    async def issue(self, user_id: str, token: str, ttl_seconds: int) -> None:
        self._tokens.set(user_id, token, ttl_seconds)

    async def check_and_renew(self, user_id: str, token: str, ttl_seconds: int) -> bool:
        if self._tokens.get(user_id) != token:
            return False
        self._tokens.expire(user_id, ttl_seconds)
        return True


class MemoryStorage:
    """Process memory always answers."""

    async def ping(self) -> bool:
        return True
