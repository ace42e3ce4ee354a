"""Presence in SQL (SQLite, PostgreSQL): the Redis adapter's behaviour, one transaction per call, events after commit.

A node's rows in a group (``fastim_presence``) count while its lease row
(``fastim_presence_nodes``) lives. Calls on the same groups take turns (a
PostgreSQL advisory lock per group, taken in one order; SQLite's one
writer), so two nodes never both announce the same user's first socket.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import and_, delete, false, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fastim.domain.errors import StorageUnavailable
from fastim.domain.model import OnlineUser, PresenceChanged
from fastim.domain.ports import Broker, Clock
from fastim.domain.presence import announcement
from fastim.infrastructure.sql.engine import sql_errors
from fastim.infrastructure.sql.schema import presence, presence_nodes

logger = logging.getLogger(__name__)

# Ids per IN list: far below the bound parameters SQLite (32766) and asyncpg (32767) take.
IN_CHUNK = 500
# Rows of nodes whose lease ended this long ago are deleted in bulk, at most once per interval (their
# users' leave was announced by the first write to the group after the lease ended, if any came).
SWEEP_AFTER_MS = 60_000
SWEEP_INTERVAL_MS = 60_000


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), IN_CHUNK):
        yield items[start:start + IN_CHUNK]


def _lock_key(group_id: str) -> int:
    """A group's advisory lock: 64 bits of its id's hash (a collision only makes two groups take turns)."""
    return int.from_bytes(hashlib.blake2b(group_id.encode("utf-8"), digest_size=8).digest(), "big", signed=True)


_LIVE_JOIN = and_(presence_nodes.c.group_id == presence.c.group_id, presence_nodes.c.node_id == presence.c.node_id)


class SqlPresenceRepository:
    def __init__(self, engine: AsyncEngine, clock: Clock, broker: Broker | None = None) -> None:
        self._engine = engine
        self._clock = clock
        self._broker = broker  # the node's: events go out on it once committed
        self._next_sweep_ms = 0

    # -- writing -------------------------------------------------------------------------------

    async def apply(
        self, node_id: str, changes: Mapping[str, Mapping[str, int]], lease_s: float, announce: bool
    ) -> set[str]:
        groups = sorted(changes)
        if not groups:
            return set()
        now = self._clock.now_ms()
        events: list[PresenceChanged] = []
        with sql_errors("write presence"):
            async with self._engine.begin() as connection:
                await self._lock(connection, groups)
                reaped = await self._reap(connection, groups, now)
                lapsed = set(groups) - await self._leased(connection, node_id, groups, now)
                for group_id in groups:
                    joined, left = await self._set_counts(connection, node_id, group_id, changes[group_id], now)
                    await self._lease(connection, node_id, group_id, now + round(lease_s * 1000))
                    await self._event(connection, group_id, joined, reaped.get(group_id, []) + left, now, events)
        await self._announce(events, announce)
        return lapsed

    async def _set_counts(self, connection: AsyncConnection, node_id: str, group_id: str, users: Mapping[str, int],
                          now: int) -> tuple[list[str], list[str]]:
        ids = list(users)
        old: dict[str, int] = {}
        for chunk in _chunks(ids):
            rows = await connection.execute(select(presence.c.user_id, presence.c.sockets).where(
                presence.c.group_id == group_id, presence.c.node_id == node_id, presence.c.user_id.in_(chunk)))
            old.update((row.user_id, row.sockets) for row in rows)
        elsewhere = await self._held(connection, group_id, ids, now, except_node=node_id)
        joined, left, present, gone = [], [], [], []
        for user_id, count in users.items():
            if count > 0:
                present.append({"group_id": group_id, "node_id": node_id, "user_id": user_id, "sockets": count})
            else:
                gone.append(user_id)
            if (old.get(user_id, 0) > 0) != (count > 0) and user_id not in elsewhere:
                (joined if count > 0 else left).append(user_id)
        if present:
            statement = _insert(connection)(presence)
            await connection.execute(statement.on_conflict_do_update(
                index_elements=[presence.c.group_id, presence.c.node_id, presence.c.user_id],
                set_={"sockets": statement.excluded.sockets}), present)
        for chunk in _chunks(gone):
            await connection.execute(delete(presence).where(
                presence.c.group_id == group_id, presence.c.node_id == node_id, presence.c.user_id.in_(chunk)))
        return joined, left

    async def _lease(self, connection: AsyncConnection, node_id: str, group_id: str, deadline: int) -> None:
        """The node's lease row: renewed while it has users in the group, deleted once it has none."""
        holds = (await connection.execute(select(presence.c.user_id).where(
            presence.c.group_id == group_id, presence.c.node_id == node_id).limit(1))).first()
        mine = and_(presence_nodes.c.group_id == group_id, presence_nodes.c.node_id == node_id)
        if holds is None:
            await connection.execute(delete(presence_nodes).where(mine))
            return
        statement = _insert(connection)(presence_nodes).values(group_id=group_id, node_id=node_id, expires_at=deadline)
        await connection.execute(statement.on_conflict_do_update(
            index_elements=[presence_nodes.c.group_id, presence_nodes.c.node_id], set_={"expires_at": deadline}))

    async def renew(self, node_id: str, group_ids: Iterable[str], lease_s: float, announce: bool) -> set[str]:
        groups = sorted(set(group_ids))
        if not groups:
            return set()
        now = self._clock.now_ms()
        events: list[PresenceChanged] = []
        with sql_errors("renew presence leases"):
            async with self._engine.begin() as connection:
                await self._lock(connection, groups)
                reaped = await self._reap(connection, groups, now)
                live = await self._leased(connection, node_id, groups, now)
                for chunk in _chunks(sorted(live)):
                    await connection.execute(update(presence_nodes).where(
                        presence_nodes.c.node_id == node_id, presence_nodes.c.group_id.in_(chunk),
                    ).values(expires_at=now + round(lease_s * 1000)))
                for group_id, left in reaped.items():
                    await self._event(connection, group_id, [], left, now, events)
            await self._sweep(now)
        await self._announce(events, announce)
        return set(groups) - live

    async def drop(self, node_id: str, group_ids: Iterable[str], announce: bool) -> None:
        groups = sorted(set(group_ids))
        if not groups:
            return
        now = self._clock.now_ms()
        events: list[PresenceChanged] = []
        with sql_errors("remove presence"):
            async with self._engine.begin() as connection:
                await self._lock(connection, groups)
                reaped = await self._reap(connection, groups, now)
                for group_id in groups:
                    mine = and_(presence.c.group_id == group_id, presence.c.node_id == node_id)
                    ours = list((await connection.execute(select(presence.c.user_id).where(mine))).scalars())
                    await connection.execute(delete(presence).where(mine))
                    await connection.execute(delete(presence_nodes).where(
                        presence_nodes.c.group_id == group_id, presence_nodes.c.node_id == node_id))
                    still = await self._held(connection, group_id, ours, now)
                    left = reaped.get(group_id, []) + [user_id for user_id in ours if user_id not in still]
                    await self._event(connection, group_id, [], left, now, events)
        await self._announce(events, announce)

    # -- reading -------------------------------------------------------------------------------

    async def users(self, group_id: str) -> list[OnlineUser]:
        with sql_errors("read presence"):
            async with self._engine.connect() as connection:
                rows = await connection.execute(
                    select(presence.c.user_id, func.sum(presence.c.sockets).label("sockets"))
                    .join(presence_nodes, _LIVE_JOIN)
                    .where(presence.c.group_id == group_id, presence_nodes.c.expires_at > self._clock.now_ms())
                    .group_by(presence.c.user_id).order_by(presence.c.user_id))
                return [OnlineUser(row.user_id, int(row.sockets)) for row in rows]

    async def counts(self, group_ids: Iterable[str]) -> dict[str, int]:
        groups = list(dict.fromkeys(group_ids))
        found: dict[str, int] = {}
        with sql_errors("count users online"):
            async with self._engine.connect() as connection:
                for chunk in _chunks(groups):
                    rows = await connection.execute(
                        select(presence.c.group_id, func.count(func.distinct(presence.c.user_id)).label("online"))
                        .join(presence_nodes, _LIVE_JOIN)
                        .where(presence.c.group_id.in_(chunk), presence_nodes.c.expires_at > self._clock.now_ms())
                        .group_by(presence.c.group_id))
                    found.update((row.group_id, int(row.online)) for row in rows)
        return {group_id: found.get(group_id, 0) for group_id in groups}

    # -- parts ---------------------------------------------------------------------------------

    @staticmethod
    async def _lock(connection: AsyncConnection, groups: Sequence[str]) -> None:
        """Take the groups in turn with other nodes' calls: first, so that every read after is current."""
        if connection.dialect.name == "postgresql":
            await connection.execute(text("SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS BIGINT[])) AS k"),
                                     {"keys": sorted(_lock_key(group_id) for group_id in groups)})
        else:  # a write as the first statement takes SQLite's one write lock now, not at the first real write
            await connection.execute(
                update(presence_nodes).where(false()).values(expires_at=presence_nodes.c.expires_at))

    @staticmethod
    async def _held(connection: AsyncConnection, group_id: str, user_ids: Sequence[str], now: int,
                    except_node: str | None = None) -> set[str]:
        """Which of the users a live node (other than ``except_node``) holds in the group."""
        found: set[str] = set()
        for chunk in _chunks(list(user_ids)):
            query = (select(presence.c.user_id).join(presence_nodes, _LIVE_JOIN)
                     .where(presence.c.group_id == group_id, presence.c.user_id.in_(chunk),
                            presence_nodes.c.expires_at > now))
            if except_node is not None:
                query = query.where(presence.c.node_id != except_node)
            found.update((await connection.execute(query.distinct())).scalars())
        return found

    @staticmethod
    async def _leased(connection: AsyncConnection, node_id: str, groups: Sequence[str], now: int) -> set[str]:
        """The groups where the node's lease lives."""
        live: set[str] = set()
        for chunk in _chunks(groups):
            live.update((await connection.execute(select(presence_nodes.c.group_id).where(
                presence_nodes.c.node_id == node_id, presence_nodes.c.group_id.in_(chunk),
                presence_nodes.c.expires_at > now))).scalars())
        return live

    async def _reap(self, connection: AsyncConnection, groups: Sequence[str], now: int) -> dict[str, list[str]]:
        """Remove the nodes whose lease ran out in these groups; per group, their users no live node holds."""
        dead: dict[str, list[str]] = {}
        for chunk in _chunks(groups):
            rows = await connection.execute(select(presence_nodes.c.group_id, presence_nodes.c.node_id).where(
                presence_nodes.c.group_id.in_(chunk), presence_nodes.c.expires_at <= now))
            for row in rows:
                dead.setdefault(row.group_id, []).append(row.node_id)
        left: dict[str, list[str]] = {}
        for group_id, nodes in dead.items():
            theirs = and_(presence.c.group_id == group_id, presence.c.node_id.in_(nodes))
            gone = sorted(set((await connection.execute(select(presence.c.user_id).where(theirs))).scalars()))
            await connection.execute(delete(presence).where(theirs))
            await connection.execute(delete(presence_nodes).where(
                presence_nodes.c.group_id == group_id, presence_nodes.c.node_id.in_(nodes)))
            still = await self._held(connection, group_id, gone, now)
            left[group_id] = [user_id for user_id in gone if user_id not in still]
        return left

    async def _event(self, connection: AsyncConnection, group_id: str, joined: list[str], left: list[str], now: int,
                     events: list[PresenceChanged]) -> None:
        if not joined and not left:
            return
        online = (await connection.execute(
            select(func.count(func.distinct(presence.c.user_id))).join(presence_nodes, _LIVE_JOIN)
            .where(presence.c.group_id == group_id, presence_nodes.c.expires_at > now))).scalar_one()
        event = announcement(group_id, sorted(joined), sorted(left), int(online))
        if event is not None:
            events.append(event)

    async def _sweep(self, now: int) -> None:
        """Delete the rows of nodes long gone from groups nobody writes to any more (bounded by their number)."""
        if now < self._next_sweep_ms:
            return
        self._next_sweep_ms = now + SWEEP_INTERVAL_MS
        cut = now - SWEEP_AFTER_MS
        async with self._engine.begin() as connection:
            stale = (select(presence_nodes.c.node_id).where(_LIVE_JOIN, presence_nodes.c.expires_at <= cut)
                     .exists())
            await connection.execute(delete(presence).where(stale))
            await connection.execute(delete(presence_nodes).where(presence_nodes.c.expires_at <= cut))

    async def _announce(self, events: list[PresenceChanged], announce: bool) -> None:
        if not announce or self._broker is None:
            return
        for event in events:
            try:
                await self._broker.publish(event)
            except StorageUnavailable as exc:  # written: the next change of the group tells the number online again
                logger.warning("a presence event of group %s was not announced: %s", event.group_id, exc)


def _insert(connection: AsyncConnection) -> Any:
    return postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
