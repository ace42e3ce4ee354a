"""The Redis repositories of messages, memberships and tokens, and the storage probe."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable

import redis.asyncio as redis

from fastim.domain.codec import InvalidPayload, decode_message, encode_message
from fastim.domain.model import GroupSummary, Joined, Message, Page
from fastim.infrastructure.redis import keys, scripts
from fastim.infrastructure.redis.batcher import CommandBatcher, Commands, LuaScript
from fastim.infrastructure.redis.client import STORAGE_ERRORS, describe, storage_errors

logger = logging.getLogger(__name__)

# A readiness probe must answer within a load balancer's patience.
PING_TIMEOUT_SECONDS = 2.0

_APPEND = LuaScript(scripts.APPEND)
_NEWEST = LuaScript(scripts.NEWEST)
_BEFORE = LuaScript(scripts.BEFORE)
_REMOVE = LuaScript(scripts.REMOVE)
_RANGE = LuaScript(scripts.RANGE)
_JOIN = LuaScript(scripts.JOIN)
_CHECK_AND_RENEW_TOKEN = LuaScript(scripts.CHECK_AND_RENEW_TOKEN)
_TOKEN_REMAINING = LuaScript(scripts.TOKEN_REMAINING)
_REVOKE_TOKEN = LuaScript(scripts.REVOKE_TOKEN)
_JOINED = {1: Joined.ADDED, 0: Joined.ALREADY, -1: Joined.FULL}


class RedisMessageRepository:
    """Each group's messages as a JSON-string list ``gml:{groupId}``, oldest first."""

    def __init__(self, client: redis.Redis, batcher: Commands | None = None) -> None:
        self._client = client
        self._batcher = batcher or CommandBatcher(client)

    async def append(self, message: Message, ttl_seconds: int, max_length: int = 0) -> int:
        key = keys.messages(message.group_id)
        with storage_errors(f"append to {key}"):
            total = await self._batcher.run(
                _APPEND, [key], [encode_message(message), ttl_seconds, max(max_length, 0)]
            )
        return int(total)

    async def newest(self, group_id: str, count: int) -> Page:
        key = keys.messages(group_id)
        if count <= 0:
            # LRANGE -0 -1 would be the whole list, so ask only for the total.
            with storage_errors(f"read the length of {key}"):
                total = await self._batcher.execute("LLEN", key)
            return Page(messages=[], total=int(total))
        with storage_errors(f"read the newest messages of {key}"):
            items, total = await self._batcher.run(_NEWEST, [key], [count])
        return Page(messages=_decode_all(key, items), total=int(total))

    async def range(self, group_id: str, start: int, end: int, limit: int) -> list[Message]:
        key = keys.messages(group_id)
        with storage_errors(f"read a range of {key}"):
            items = await self._batcher.run(_RANGE, [key], [start, end, max(limit, 0)])
        return _decode_all(key, items)

    async def before(self, group_id: str, user_id: str, ts: int, count: int, window: int) -> list[Message] | None:
        key = keys.messages(group_id)
        with storage_errors(f"read the messages before an anchor in {key}"):
            items = await self._batcher.run(_BEFORE, [key], [user_id, str(ts), max(count, 0), max(window, 1)])
        if items is None:
            return None
        return _decode_all(key, items)

    async def remove(self, group_id: str, user_id: str, ts: int, window: int) -> Message | None:
        key = keys.messages(group_id)
        with storage_errors(f"remove a message from {key}"):
            item = await self._batcher.run(_REMOVE, [key], [user_id, str(ts), max(window, 1)])
        if item is None:
            return None
        try:
            return decode_message(item)
        except InvalidPayload as exc:
            # The script matched group, author and time but the element is not
            # quite our format (say a float userId); it is gone all the same.
            logger.warning("removed a malformed message from %s: %s", key, exc)
            return Message(group_id=group_id, user_id=user_id, info="", ts=ts)

    async def summaries(self, group_ids: Iterable[str]) -> list[GroupSummary]:
        ids = list(group_ids)
        if not ids:
            return []
        with storage_errors(f"read the summaries of {len(ids)} groups"):
            # One transaction, so each group's newest message and total agree.
            async with self._client.pipeline(transaction=True) as pipe:
                for group_id in ids:
                    key = keys.messages(group_id)
                    pipe.lindex(key, -1)
                    pipe.llen(key)
                replies = await pipe.execute()
        summaries = []
        for index, group_id in enumerate(ids):
            newest, total = replies[2 * index], replies[2 * index + 1]
            decoded = _decode_all(keys.messages(group_id), [] if newest is None else [newest])
            summaries.append(GroupSummary(group_id, decoded[0] if decoded else None, int(total)))
        return summaries


class RedisMembershipRepository:
    """The groups each user joined, as the set ``ugs:{userId}``."""

    def __init__(self, client: redis.Redis, batcher: Commands | None = None) -> None:
        self._batcher = batcher or CommandBatcher(client)

    async def join(self, user_id: str, group_id: str, max_groups: int = 0) -> Joined:
        key = keys.memberships(user_id)
        with storage_errors(f"add a group to {key}"):
            outcome = await self._batcher.run(_JOIN, [key], [group_id, max(max_groups, 0)])
        return _JOINED[int(outcome)]

    async def leave(self, user_id: str, group_id: str) -> bool:
        key = keys.memberships(user_id)
        with storage_errors(f"remove a group from {key}"):
            return bool(await self._batcher.execute("SREM", key, group_id))

    async def count(self, user_id: str) -> int:
        key = keys.memberships(user_id)
        with storage_errors(f"count {key}"):
            return int(await self._batcher.execute("SCARD", key))

    async def groups_of(self, user_id: str) -> list[str]:
        key = keys.memberships(user_id)
        with storage_errors(f"read {key}"):
            members = await self._batcher.execute("SMEMBERS", key)
        # A set has no order; sorting makes the answer the same on every call.
        return sorted(members)

    async def is_member(self, user_id: str, group_id: str) -> bool:
        key = keys.memberships(user_id)
        with storage_errors(f"check a group in {key}"):
            return bool(await self._batcher.execute("SISMEMBER", key, group_id))


class RedisTokenRepository:
    """One login token per user, as the string ``login:{userId}`` with a TTL."""

    def __init__(self, client: redis.Redis, batcher: Commands | None = None) -> None:
        self._batcher = batcher or CommandBatcher(client)

    async def issue(self, user_id: str, token: str, ttl_seconds: int) -> None:
        key = keys.token(user_id)
        # SET rejects EX 0; a non-positive TTL means the token does not expire.
        expiry = ["EX", ttl_seconds] if ttl_seconds > 0 else []
        with storage_errors(f"store the token {key}"):
            await self._batcher.execute("SET", key, token, *expiry)

    async def check_and_renew(self, user_id: str, token: str, ttl_seconds: int) -> bool:
        key = keys.token(user_id)
        with storage_errors(f"check the token {key}"):
            renewed = await self._batcher.run(_CHECK_AND_RENEW_TOKEN, [key], [token, ttl_seconds])
        return renewed == 1

    async def remaining(self, user_id: str, token: str) -> float | None:
        key = keys.token(user_id)
        with storage_errors(f"read the token {key}"):
            milliseconds = int(await self._batcher.run(_TOKEN_REMAINING, [key], [token]))
        if milliseconds == -1:
            return math.inf  # stored without a TTL
        if milliseconds < 0:
            return None  # another token, or none
        return milliseconds / 1000

    async def revoke(self, user_id: str, token: str) -> bool:
        key = keys.token(user_id)
        with storage_errors(f"delete the token {key}"):
            return int(await self._batcher.run(_REVOKE_TOKEN, [key], [token])) == 1


class RedisStorage:
    """The readiness probe: does Redis answer a PING?"""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    async def ping(self) -> bool:
        """True when Redis answers; never raises."""
        try:
            async with asyncio.timeout(PING_TIMEOUT_SECONDS):
                return bool(await self._client.ping())
        except STORAGE_ERRORS as exc:
            logger.warning("redis does not answer: %s", describe(exc))
            return False
        except Exception:
            logger.exception("redis ping failed unexpectedly")
            return False


def _decode_all(key: str, items: Iterable[str]) -> list[Message]:
    """The messages among ``items``; entries written by other programs that do not decode are skipped."""
    messages = []
    for item in items:
        try:
            messages.append(decode_message(item))
        except InvalidPayload as exc:
            logger.warning("skipping an entry of %s that is not a message: %s", key, exc)
    return messages
