"""The Redis repositories of messages, memberships and tokens, and the storage probe."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import secrets
import time
from collections.abc import Iterable

import redis.asyncio as redis

from fastim.domain.codec import InvalidPayload, decode_event, encode_event, encode_message
from fastim.domain.errors import NotReplicated, OutcomeUnknown, RecallWindowExpired, StorageUnavailable
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
)
from fastim.infrastructure.redis import scripts
from fastim.infrastructure.redis.keys import STANDALONE, Layout
from fastim.infrastructure.redis.batcher import CommandBatcher, Commands, LuaScript, Server
from fastim.infrastructure.redis.client import STORAGE_ERRORS, describe, storage_errors
from fastim.infrastructure.redis.cluster import ClusterCommands
from fastim.infrastructure.redis.pipeline import CommandInFlight
from fastim.infrastructure.streams import EPOCH_BYTES, accounted_tail

logger = logging.getLogger(__name__)

# A readiness probe must answer within a load balancer's patience.
PING_TIMEOUT_SECONDS = 2.0
# An append not run by Redis within this of being sent is refused by the script: a Redis that
# stalls longer turns sends into honest "not sent" answers instead of late stores. Redis answers
# in milliseconds; 2 s is a stall, not a slow moment.
APPEND_DEADLINE_MS = 2000
# Past the deadline, this much more for clocks read at slightly different moments.
SETTLE_MARGIN_S = 0.5
# With [storage] redis_wait_replicas, how long a send waits for its replicas' confirmation.
WAIT_TIMEOUT_MS = 1000

_APPEND = LuaScript(scripts.APPEND)
_NEWEST = LuaScript(scripts.NEWEST)
_BEFORE = LuaScript(scripts.BEFORE)
_REMOVE = LuaScript(scripts.REMOVE)
_FIND = LuaScript(scripts.FIND)
_TAIL = LuaScript(scripts.TAIL)
_RANGE = LuaScript(scripts.RANGE)
_SUMMARY = LuaScript(scripts.SUMMARY)
_JOIN = LuaScript(scripts.JOIN)
_CHECK_AND_RENEW_TOKEN = LuaScript(scripts.CHECK_AND_RENEW_TOKEN)
_TOKEN_REMAINING = LuaScript(scripts.TOKEN_REMAINING)
_REVOKE_TOKEN = LuaScript(scripts.REVOKE_TOKEN)
_JOINED = {1: Joined.ADDED, 0: Joined.ALREADY, -1: Joined.FULL}


class RedisMessageRepository:
    """Each group's messages as a JSON-string list ``gml:{groupId}``, oldest first, numbered by its stream.

    The stream (``fastim:stream:{groupId}``: epoch, latest seq) and the newest
    recall events (``fastim:recalls:{groupId}``) are keys of our own beside
    fast-im's. Appends and recalls run as scripts that number, store and
    publish in one step.
    """

    def __init__(
        self,
        client: redis.Redis | None,
        batcher: Commands | None = None,
        *,
        layout: Layout = STANDALONE,
        wait_replicas: int = 0,
        wait_timeout_ms: int = WAIT_TIMEOUT_MS,
    ) -> None:
        """``wait_replicas``: a send is answered once that many replicas confirmed it (WAIT)."""
        self._batcher = batcher or CommandBatcher(client)
        self._keys = layout
        self._wait_replicas = wait_replicas
        self._wait_timeout_ms = wait_timeout_ms

    async def append(self, message: Message, ttl_seconds: int, max_length: int = 0) -> Appended:
        group_id = message.group_id
        key = self._keys.messages(group_id)
        with storage_errors(f"connect to append to {key}"):
            server = await self._batcher.server(key)  # a new connection first measures Redis's clock
        # Stated in Redis's clock: past it the script refuses, so an append whose answer we stop
        # waiting for cannot be stored later.
        deadline = time.time_ns() // 1_000_000 + server.clock_offset_ms + APPEND_DEADLINE_MS
        args = [encode_message(message), ttl_seconds, max(max_length, 0), new_epoch(), deadline,
                self._keys.channel(group_id), *self._publishing(server)]
        try:
            with storage_errors(f"append to {key}"):
                reply = await self._batcher.run(_APPEND, [key, self._keys.stream(group_id)], args)
        except StorageUnavailable as exc:
            if isinstance(exc.__cause__, CommandInFlight):
                settle = (deadline - server.clock_offset_ms) / 1000 - time.time() + SETTLE_MARGIN_S
                raise OutcomeUnknown(f"{exc}; it may have been stored", settle_after=max(0.0, settle)) from exc
            raise
        if int(reply[0]) < 0:
            raise StorageUnavailable(f"append to {key} came too late to Redis and was not stored")
        seq, epoch, total = int(reply[0]), str(reply[1]), int(reply[2])
        if self._wait_replicas > 0:
            confirmed = await self._replicate_and_publish(key, group_id, reply[3])
            if confirmed < self._wait_replicas:
                raise NotReplicated(
                    f"stored and delivered, but {confirmed} of {self._wait_replicas} replicas confirmed it "
                    f"within {self._wait_timeout_ms} ms: a failover may lose it"
                )
        return Appended(dataclasses.replace(message, seq=seq, id=message_id(epoch, seq)), total)

    def _publishing(self, server: Server) -> list[str]:
        """The script's publish command and writer arguments.

        Without replicas to wait for, the script publishes, and a stream written by another Redis
        process than last time (a promoted replica) restarts its epoch: the old master may have
        announced events that the new one never received. With replicas to wait for, the node
        publishes once they confirmed: nothing announced can be lost, and the epoch stays.
        """
        if self._wait_replicas > 0:
            return ["", ""]
        return [self._keys.publish, server.writer]

    async def _replicate_and_publish(self, key: str, group_id: str, event: str) -> int:
        """WAIT for the replicas, then publish ``event``: how many replicas confirmed it."""
        try:
            with storage_errors(f"wait for replicas of {key}"):
                confirmed = await self._batcher.wait_replicas(key, self._wait_replicas, self._wait_timeout_ms)
        except StorageUnavailable:
            confirmed = 0
        try:
            with storage_errors(f"publish to {self._keys.channel(group_id)}"):
                await self._batcher.execute(self._keys.publish, self._keys.channel(group_id), event)
        except StorageUnavailable as exc:  # stored: the next event's gap makes every node read it
            logger.warning("an event of %s was stored but not published: %s", key, exc)
        return int(confirmed)

    async def find(self, draft: Message, window: int) -> Message | None:
        key = self._keys.messages(draft.group_id)
        with storage_errors(f"look for a message in {key}"):
            item = await self._batcher.run(_FIND, [key], [draft.user_id, str(draft.ts), max(window, 1)])
        found = _decode_all(key, [item] if item is not None else [])
        return found[0] if found and found[0].info == draft.info else None

    async def newest(self, group_id: str, count: int) -> Page:
        key = self._keys.messages(group_id)
        with storage_errors(f"read the newest messages of {key}"):
            items, total, seq, epoch = await self._batcher.run(
                _NEWEST, [key, self._keys.stream(group_id)], [max(count, 0)]
            )
        return Page(messages=_decode_all(key, items), total=int(total), seq=int(seq), epoch=str(epoch))

    async def tail(self, group_id: str, since: int, limit: int) -> Tail:
        key = self._keys.messages(group_id)
        with storage_errors(f"read the events of {key} after {since}"):
            seq, epoch, total, items, recall_items = await self._batcher.run(
                _TAIL, [key, self._keys.stream(group_id), self._keys.recalls(group_id)], [since, max(limit, 0)]
            )
        seq, epoch, total = int(seq), str(epoch), int(total)
        count = seq - since
        if count <= 0 or count > limit:
            return Tail([], seq, epoch, complete=count == 0, total=total)
        recalls = [event for event in _decode_events(key, recall_items) if isinstance(event, Recall)]
        events, complete = accounted_tail(_decode_all(key, items), recalls, since, seq, epoch)
        return Tail(events, seq, epoch, complete, total)

    async def range(self, group_id: str, start: int, end: int, limit: int) -> list[Message]:
        key = self._keys.messages(group_id)
        with storage_errors(f"read a range of {key}"):
            items = await self._batcher.run(_RANGE, [key], [start, end, max(limit, 0)])
        return _decode_all(key, items)

    async def before(self, group_id: str, user_id: str, ts: int, count: int, window: int) -> list[Message] | None:
        key = self._keys.messages(group_id)
        with storage_errors(f"read the messages before an anchor in {key}"):
            items = await self._batcher.run(_BEFORE, [key], [user_id, str(ts), max(count, 0), max(window, 1)])
        if items is None:
            return None
        return _decode_all(key, items)

    async def remove(self, target: RecallTarget, window: int, ttl_seconds: int, keep_recalls: int) -> Recall | None:
        group_id = target.group_id
        key = self._keys.messages(group_id)
        prefix = encode_event(Recall(group_id, "-", 0))  # {"event":"recall","groupId":...,"userId":"-","ts":0}
        prefix = prefix[: prefix.rindex(',"userId":')]  # the script adds the author, ts, id, seq and epoch
        by, value = ("id", target.id) if target.id is not None else ("ts", str(target.ts))
        if target.user_id is None and by != "id":
            raise ValueError("a recall of anyone's message names it by id")
        with storage_errors(f"recall a message of {key}"):
            server = await self._batcher.server(key)
            args = [by, target.user_id or "", value, max(window, 1), target.not_before_ms, ttl_seconds,
                    max(keep_recalls, 1), new_epoch(), self._keys.channel(group_id), prefix, *self._publishing(server)]
            names = [key, self._keys.stream(group_id), self._keys.recalls(group_id)]
            reply = await self._batcher.run(_REMOVE, names, args)
        if int(reply[0]) == 0:
            return None
        if int(reply[0]) < 0:
            raise RecallWindowExpired("the message is older than the recall window")
        if self._wait_replicas > 0:
            confirmed = await self._replicate_and_publish(key, group_id, reply[2])
            if confirmed < self._wait_replicas:
                logger.warning("a recall in %s was confirmed by %d of %d replicas", key, confirmed, self._wait_replicas)
        try:
            event = decode_event(reply[2])
        except InvalidPayload as exc:  # the script writes it: a message of a shape the codec refuses
            logger.warning("recalled a message of %s whose recall event does not decode: %s", key, exc)
            return Recall(group_id, target.user_id or "", target.ts or 0, id=target.id)
        return event if isinstance(event, Recall) else None

    async def summaries(self, group_ids: Iterable[str]) -> list[GroupSummary]:
        ids = list(group_ids)
        if not ids:
            return []
        names = [self._keys.messages(group_id) for group_id in ids]
        with storage_errors(f"read the summaries of {len(ids)} groups"):
            # One script per group (its newest message and total agree), all sent in one turn: one
            # write per connection (per shard on a cluster).
            replies = await asyncio.gather(*(self._batcher.run(_SUMMARY, [name], []) for name in names))
        summaries = []
        for group_id, name, (newest, total) in zip(ids, names, replies):
            decoded = _decode_all(name, [] if newest is None else [newest])
            summaries.append(GroupSummary(group_id, decoded[0] if decoded else None, int(total)))
        return summaries


class RedisMembershipRepository:
    """The groups each user joined, as the set ``ugs:{userId}``."""

    def __init__(self, client: redis.Redis | None, batcher: Commands | None = None) -> None:
        self._batcher = batcher or CommandBatcher(client)
        self._keys = STANDALONE  # a user's keys have the same names in every layout

    async def join(self, user_id: str, group_id: str, max_groups: int = 0) -> Joined:
        key = self._keys.memberships(user_id)
        with storage_errors(f"add a group to {key}"):
            outcome = await self._batcher.run(_JOIN, [key], [group_id, max(max_groups, 0)])
        return _JOINED[int(outcome)]

    async def leave(self, user_id: str, group_id: str) -> bool:
        key = self._keys.memberships(user_id)
        with storage_errors(f"remove a group from {key}"):
            return bool(await self._batcher.execute("SREM", key, group_id))

    async def count(self, user_id: str) -> int:
        key = self._keys.memberships(user_id)
        with storage_errors(f"count {key}"):
            return int(await self._batcher.execute("SCARD", key))

    async def groups_of(self, user_id: str) -> list[str]:
        key = self._keys.memberships(user_id)
        with storage_errors(f"read {key}"):
            members = await self._batcher.execute("SMEMBERS", key)
        # A set has no order; sorting makes the answer the same on every call.
        return sorted(members)

    async def is_member(self, user_id: str, group_id: str) -> bool:
        key = self._keys.memberships(user_id)
        with storage_errors(f"check a group in {key}"):
            return bool(await self._batcher.execute("SISMEMBER", key, group_id))


class RedisTokenRepository:
    """One login token per user, as the string ``login:{userId}`` with a TTL."""

    def __init__(self, client: redis.Redis | None, batcher: Commands | None = None) -> None:
        self._batcher = batcher or CommandBatcher(client)
        self._keys = STANDALONE  # a user's keys have the same names in every layout

    async def issue(self, user_id: str, token: str, ttl_seconds: int) -> None:
        key = self._keys.token(user_id)
        # SET rejects EX 0; a non-positive TTL means the token does not expire.
        expiry = ["EX", ttl_seconds] if ttl_seconds > 0 else []
        with storage_errors(f"store the token {key}"):
            await self._batcher.execute("SET", key, token, *expiry)

    async def check_and_renew(self, user_id: str, token: str, ttl_seconds: int) -> bool:
        key = self._keys.token(user_id)
        with storage_errors(f"check the token {key}"):
            renewed = await self._batcher.run(_CHECK_AND_RENEW_TOKEN, [key], [token, ttl_seconds])
        return renewed == 1

    async def remaining(self, user_id: str, token: str) -> float | None:
        key = self._keys.token(user_id)
        with storage_errors(f"read the token {key}"):
            milliseconds = int(await self._batcher.run(_TOKEN_REMAINING, [key], [token]))
        if milliseconds == -1:
            return math.inf  # stored without a TTL
        if milliseconds < 0:
            return None  # another token, or none
        return milliseconds / 1000

    async def revoke(self, user_id: str, token: str) -> bool:
        key = self._keys.token(user_id)
        with storage_errors(f"delete the token {key}"):
            return int(await self._batcher.run(_REVOKE_TOKEN, [key], [token])) == 1

    async def revoke_all(self, user_id: str) -> bool:
        key = self._keys.token(user_id)
        with storage_errors(f"delete the token {key}"):
            return int(await self._batcher.execute("DEL", key)) == 1


class RedisStorage:
    """The readiness probe: does Redis answer a PING? (On a cluster: does every master?)"""

    def __init__(self, client: redis.Redis | ClusterCommands) -> None:
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


def new_epoch() -> str:
    """An epoch for a stream that may start with this call (the script keeps an existing one)."""
    return secrets.token_hex(EPOCH_BYTES)


def _decode_events(key: str, items: Iterable[str]) -> list[Event]:
    """The events among ``items``; entries written by other programs that do not decode are skipped."""
    events = []
    for item in items:
        try:
            events.append(decode_event(item))
        except InvalidPayload as exc:
            logger.warning("skipping an entry of %s that is not an event: %s", key, exc)
    return events


def _decode_all(key: str, items: Iterable[str]) -> list[Message]:
    """The messages among ``items`` (a message list holds nothing else but what other programs wrote)."""
    return [event for event in _decode_events(key, items) if isinstance(event, Message)]
