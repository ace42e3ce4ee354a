"""Presence in Redis: per group, a sorted set of live nodes by lease deadline, and a hash of users per node."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping

import redis.asyncio as redis

from fastim.domain.model import PRESENCE_LISTED_MAX, OnlineUser
from fastim.infrastructure.redis import presence_scripts
from fastim.infrastructure.redis.batcher import CommandBatcher, Commands, LuaScript
from fastim.infrastructure.redis.client import storage_errors
from fastim.infrastructure.redis.keys import STANDALONE, Layout

# A lapsed node's hash outlives its lease deadline by this, so that another node's next write to
# the group (live nodes renew every fastim.domain.presence.RENEW_S = 5 s) still finds whom it held
# and announces their leave.
GRACE_S = 10.0

_APPLY = LuaScript(presence_scripts.APPLY)
_RENEW = LuaScript(presence_scripts.RENEW)
_DROP = LuaScript(presence_scripts.DROP)
_USERS = LuaScript(presence_scripts.USERS)
_COUNT = LuaScript(presence_scripts.COUNT)


class RedisPresenceRepository:
    """Keys of :class:`~fastim.infrastructure.redis.keys.Layout` (``presence``, ``presence_node``, ``online``).

    One script per group and call, the scripts of one call sent in one write
    (one per shard on a cluster); a script publishes its group's presence
    event itself (PUBLISH, SPUBLISH on a cluster), as appends do.
    """

    def __init__(self, client: redis.Redis | None, batcher: Commands | None = None, *,
                 layout: Layout = STANDALONE, grace_s: float = GRACE_S) -> None:
        self._batcher = batcher or CommandBatcher(client)
        self._keys = layout
        self._grace_ms = round(grace_s * 1000)

    def _keys_of(self, group_id: str, node_id: str) -> list[str]:
        return [self._keys.presence(group_id), self._keys.online(group_id), self._keys.presence_node(group_id, node_id)]

    def _args(self, group_id: str, node_id: str, lease_s: float, announce: bool) -> list[str | int]:
        prefix = json.dumps({"event": "presence", "groupId": group_id}, ensure_ascii=False, separators=(",", ":"))
        return [self._keys.presence_node_prefix, self._keys.presence_node_suffix(group_id), node_id,
                max(1, round(lease_s * 1000)), self._grace_ms, self._keys.publish if announce else "",
                self._keys.channel(group_id), prefix[:-1], PRESENCE_LISTED_MAX]

    async def apply(
        self, node_id: str, changes: Mapping[str, Mapping[str, int]], lease_s: float, announce: bool
    ) -> set[str]:
        groups = list(changes)
        if not groups:
            return set()
        calls = []
        for group_id in groups:
            pairs = [part for user_id, count in changes[group_id].items() for part in (user_id, max(0, count))]
            calls.append(self._batcher.run(_APPLY, self._keys_of(group_id, node_id),
                                           [*self._args(group_id, node_id, lease_s, announce), *pairs]))
        with storage_errors(f"write the presence of {len(groups)} groups"):
            replies = await asyncio.gather(*calls)
        return {group_id for group_id, lapsed in zip(groups, replies) if int(lapsed)}

    async def renew(self, node_id: str, group_ids: Iterable[str], lease_s: float, announce: bool) -> set[str]:
        groups = list(group_ids)
        if not groups:
            return set()
        with storage_errors(f"renew the presence leases of {len(groups)} groups"):
            replies = await asyncio.gather(*(
                self._batcher.run(_RENEW, self._keys_of(g, node_id), self._args(g, node_id, lease_s, announce))
                for g in groups
            ))
        return {group_id for group_id, lapsed in zip(groups, replies) if int(lapsed)}

    async def drop(self, node_id: str, group_ids: Iterable[str], announce: bool) -> None:
        groups = list(group_ids)
        if not groups:
            return
        with storage_errors(f"remove the presence of {len(groups)} groups"):
            await asyncio.gather(*(
                self._batcher.run(_DROP, self._keys_of(g, node_id), self._args(g, node_id, 0, announce))
                for g in groups
            ))

    async def users(self, group_id: str) -> list[OnlineUser]:
        with storage_errors(f"read the presence of {self._keys.presence(group_id)}"):
            hashes = await self._batcher.run(
                _USERS, [self._keys.presence(group_id)],
                [self._keys.presence_node_prefix, self._keys.presence_node_suffix(group_id)],
            )
        sockets: dict[str, int] = {}
        for flat in hashes:
            for user_id, count in zip(flat[::2], flat[1::2]):
                sockets[user_id] = sockets.get(user_id, 0) + int(count)
        return [OnlineUser(user_id, sockets[user_id]) for user_id in sorted(sockets)]

    async def counts(self, group_ids: Iterable[str]) -> dict[str, int]:
        groups = list(dict.fromkeys(group_ids))
        if not groups:
            return {}
        with storage_errors(f"count the users online in {len(groups)} groups"):
            replies = await asyncio.gather(*(
                self._batcher.run(_COUNT, [self._keys.presence(g), self._keys.online(g)],
                                  [self._keys.presence_node_prefix, self._keys.presence_node_suffix(g)])
                for g in groups
            ))
        return {group_id: max(0, int(count)) for group_id, count in zip(groups, replies)}
