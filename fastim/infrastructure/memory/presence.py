"""Presence in process: the Redis adapter's behaviour, leases by the Clock, events on the node's broker."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from fastim.domain.model import OnlineUser
from fastim.domain.ports import Broker, Clock
from fastim.domain.presence import announcement

SWEEP_INTERVAL_MS = 60_000  # groups nobody writes to any more are looked through at most once a minute


class _Lease:
    """One node's users in one group, and until when they count."""

    __slots__ = ("users", "deadline_ms")

    def __init__(self) -> None:
        self.users: dict[str, int] = {}
        self.deadline_ms = 0


class MemoryPresenceRepository:
    """Per group, each node's users and lease; a lapsed node is removed (its users leave) by the next write."""

    def __init__(self, clock: Clock, broker: Broker | None = None) -> None:
        self._clock = clock
        self._broker = broker  # the node's: announcing is part of writing (None: nobody listens)
        self._groups: dict[str, dict[str, _Lease]] = {}  # group -> node -> lease
        self._next_sweep_ms = 0

    async def apply(
        self, node_id: str, changes: Mapping[str, Mapping[str, int]], lease_s: float, announce: bool
    ) -> set[str]:
        now = self._clock.now_ms()
        lapsed = set()
        for group_id, users in changes.items():
            nodes = self._groups.setdefault(group_id, {})
            left = self._reap(nodes, now)
            mine = nodes.get(node_id)
            if mine is None:
                lapsed.add(group_id)
                mine = nodes[node_id] = _Lease()
            rest = [lease for node, lease in nodes.items() if node != node_id]
            joined = []
            for user_id, count in users.items():
                old = mine.users.get(user_id, 0)
                if count > 0:
                    mine.users[user_id] = count
                else:
                    mine.users.pop(user_id, None)
                if (old > 0) != (count > 0) and not _held(rest, user_id):
                    (joined if count > 0 else left).append(user_id)
            mine.deadline_ms = now + round(lease_s * 1000)
            if not mine.users:
                del nodes[node_id]
            await self._settle(group_id, nodes, joined, left, announce)
        return lapsed

    async def renew(self, node_id: str, group_ids: Iterable[str], lease_s: float, announce: bool) -> set[str]:
        now = self._clock.now_ms()
        lapsed = set()
        for group_id in group_ids:
            nodes = self._groups.get(group_id, {})
            left = self._reap(nodes, now)
            mine = nodes.get(node_id)
            if mine is None:
                lapsed.add(group_id)
            else:
                mine.deadline_ms = now + round(lease_s * 1000)
            await self._settle(group_id, nodes, [], left, announce)
        await self._sweep(now, announce)
        return lapsed

    async def drop(self, node_id: str, group_ids: Iterable[str], announce: bool) -> None:
        now = self._clock.now_ms()
        for group_id in group_ids:
            nodes = self._groups.get(group_id, {})
            left = self._reap(nodes, now)
            mine = nodes.pop(node_id, None)
            if mine is not None:
                left += [user_id for user_id in mine.users if not _held(nodes.values(), user_id)]
            await self._settle(group_id, nodes, [], left, announce)

    async def users(self, group_id: str) -> list[OnlineUser]:
        sockets: dict[str, int] = {}
        for lease in self._live(group_id):
            for user_id, count in lease.users.items():
                sockets[user_id] = sockets.get(user_id, 0) + count
        return [OnlineUser(user_id, sockets[user_id]) for user_id in sorted(sockets)]

    async def counts(self, group_ids: Iterable[str]) -> dict[str, int]:
        return {group_id: _online(self._live(group_id)) for group_id in group_ids}

    def _live(self, group_id: str) -> list[_Lease]:
        now = self._clock.now_ms()
        return [lease for lease in self._groups.get(group_id, {}).values() if lease.deadline_ms > now]

    @staticmethod
    def _reap(nodes: dict[str, _Lease], now: int) -> list[str]:
        """Remove the nodes whose lease ran out; their users that no live node holds."""
        dead = [node for node, lease in nodes.items() if lease.deadline_ms <= now]
        gone: dict[str, None] = {}
        for node in dead:
            gone.update(dict.fromkeys(nodes.pop(node).users))
        return [user_id for user_id in gone if not _held(nodes.values(), user_id)]

    async def _settle(self, group_id: str, nodes: dict[str, _Lease], joined: list[str], left: list[str],
                      announce: bool) -> None:
        if not nodes:
            self._groups.pop(group_id, None)
        event = announcement(group_id, sorted(joined), sorted(left), _online(nodes.values()))
        if announce and event is not None and self._broker is not None:
            await self._broker.publish(event)

    async def _sweep(self, now: int, announce: bool) -> None:
        """Groups that no live node writes to any more would keep their lapsed nodes: remove them."""
        if now < self._next_sweep_ms:
            return
        self._next_sweep_ms = now + SWEEP_INTERVAL_MS
        for group_id in list(self._groups):
            nodes = self._groups.get(group_id)
            if nodes is None:
                continue  # went while an event was published
            left = self._reap(nodes, now)
            if left or not nodes:
                await self._settle(group_id, nodes, [], left, announce)


def _held(leases: Iterable[_Lease], user_id: str) -> bool:
    return any(user_id in lease.users for lease in leases)


def _online(leases: Iterable[_Lease]) -> int:
    users: set[str] = set()
    for lease in leases:
        users.update(lease.users)
    return len(users)
