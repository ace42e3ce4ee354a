"""Contract of PresenceRepository, run against memory, real Redis, a real Redis Cluster, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import select

from fastim.domain.model import PRESENCE_LISTED_MAX, OnlineUser, PresenceChanged
from fastim.infrastructure.clock import ManualClock
from fastim.infrastructure.memory.broker import MemoryBroker
from fastim.infrastructure.memory.presence import MemoryPresenceRepository
from fastim.infrastructure.redis.broker import RedisBroker
from fastim.infrastructure.redis.client import make_client
from fastim.infrastructure.redis.cluster import ClusterCommands, parse_addresses, slot_of
from fastim.infrastructure.redis.endpoint import Endpoint
from fastim.infrastructure.redis.keys import CLUSTER, STANDALONE
from fastim.infrastructure.redis.pipeline import PipelinedConnection
from fastim.infrastructure.redis.presence import RedisPresenceRepository
from fastim.infrastructure.redis.sharded_broker import ShardedBroker
from fastim.infrastructure.sql.engine import make_engine, migrate
from fastim.infrastructure.sql.presence import SWEEP_AFTER_MS, SqlPresenceRepository
from fastim.infrastructure.sql.schema import presence as presence_rows
from fastim.infrastructure.sql.schema import presence_nodes
from tests.contract.conftest import wait_for

LEASE_S = 20.0  # the production lease, for tests that are not about expiry
QUIET_S = 0.2  # how long "no event came" is watched on a broker that delivers asynchronously


@dataclass
class PresenceBackend:
    name: str
    repository: Any
    broker: Any  # events of the groups subscribed to (by :meth:`listen`) arrive on it
    short_lease_s: float  # a lease that :meth:`outlive` outlives
    clock: ManualClock | None = None  # None: storage's own clock (Redis)
    raw: Any = None  # a plain client of the standalone Redis, for looking at keys
    layout: Any = STANDALONE
    engine: Any = None  # the SQL engine, for looking at rows
    events: list = field(default_factory=list)

    async def outlive(self, lease_s: float) -> None:
        """Let a lease of ``lease_s`` run out: the manual clock moves, Redis's really passes."""
        if self.clock is not None:
            self.clock.advance(lease_s + 0.001)
        else:
            await asyncio.sleep(lease_s + 0.15)

    async def listen(self, *group_ids: str) -> None:
        for group_id in group_ids:
            await self.broker.subscribe(group_id, self._heard)
        if self.raw is not None:
            async def subscribed() -> bool:
                counts = dict(await self.raw.pubsub_numsub(*(f"mq:{g}" for g in group_ids)))
                return all(counts.get(f"mq:{g}", 0) >= 1 for g in group_ids)

            await wait_for(subscribed)

    def _heard(self, group_id: str, event) -> None:
        self.events.append(event)

    async def heard(self, count: int) -> list:
        """The events heard, once there are ``count`` (Redis delivers them a moment after the write)."""
        await wait_for(lambda: len(self.events) >= count)
        if self.clock is None:
            await asyncio.sleep(QUIET_S)  # and no more than that
        return list(self.events)


def _sql(name: str, url: str, io_loop) -> tuple[PresenceBackend, list]:
    engine = make_engine(url)
    io_loop.run_sync(lambda: migrate(engine))
    clock, broker = ManualClock(), MemoryBroker()
    backend = PresenceBackend(name, SqlPresenceRepository(engine, clock, broker), broker, 1.0, clock=clock,
                              engine=engine)
    return backend, [engine.dispose]


@pytest.fixture(params=[
    "memory",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("cluster", marks=pytest.mark.redis),
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
])
def presence(request, io_loop):
    closing: list = []
    if request.param == "memory":
        clock, broker = ManualClock(), MemoryBroker()
        backend = PresenceBackend("memory", MemoryPresenceRepository(clock, broker), broker, 1.0, clock=clock)
    elif request.param == "redis":
        url = request.getfixturevalue("fresh_redis").url
        commands, raw, broker_commands = PipelinedConnection(url), make_client(url), PipelinedConnection(url)
        broker = RedisBroker(Endpoint(url), broker_commands)
        backend = PresenceBackend("redis", RedisPresenceRepository(None, commands), broker, 0.3, raw=raw)
        closing = [commands.aclose, broker.close, broker_commands.aclose, raw.aclose]
    elif request.param == "cluster":
        startup = parse_addresses(",".join(request.getfixturevalue("fresh_redis_cluster").startup_nodes))
        commands, broker_commands = ClusterCommands(startup), ClusterCommands(startup)
        broker = ShardedBroker(broker_commands)
        backend = PresenceBackend("cluster", RedisPresenceRepository(None, commands, layout=CLUSTER), broker, 0.3,
                                  layout=CLUSTER)
        closing = [commands.aclose, broker.close, broker_commands.aclose]
    elif request.param == "sqlite":
        backend, closing = _sql("sqlite", f"sqlite:///{request.getfixturevalue('tmp_path') / 'chat.db'}", io_loop)
    else:
        database = request.getfixturevalue("postgres_database")
        io_loop.run_sync(database.truncate)
        backend, closing = _sql("postgres", database.url, io_loop)
    yield backend

    async def close_all() -> None:
        for close in closing:
            await close()

    io_loop.run_sync(close_all)


async def write(backend: PresenceBackend, node: str, changes: dict, lease_s: float = LEASE_S,
                announce: bool = True) -> set[str]:
    return await backend.repository.apply(node, changes, lease_s, announce)


# -- counting ------------------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_nobody_is_online_in_a_group_nobody_wrote(presence):
    assert await presence.repository.users("g") == []
    assert await presence.repository.counts(["g", "h"]) == {"g": 0, "h": 0}
    assert await presence.repository.counts([]) == {}


@pytest.mark.gen_test
async def test_users_sum_sockets_over_nodes_and_counts_are_distinct_users(presence):
    await write(presence, "a", {"g": {"u2": 2, "u1": 1}, "h": {"u1": 1}})
    await write(presence, "b", {"g": {"u1": 3}})
    assert await presence.repository.users("g") == [OnlineUser("u1", 4), OnlineUser("u2", 2)]
    assert await presence.repository.users("h") == [OnlineUser("u1", 1)]
    assert await presence.repository.counts(["g", "h", "empty"]) == {"g": 2, "h": 1, "empty": 0}


@pytest.mark.gen_test
async def test_a_count_is_absolute_and_zero_removes_the_user(presence):
    await write(presence, "a", {"g": {"u1": 1, "u2": 1}})
    await write(presence, "a", {"g": {"u1": 5, "u2": 0}})
    assert await presence.repository.users("g") == [OnlineUser("u1", 5)]
    await write(presence, "a", {"g": {"u1": 0}})
    assert await presence.repository.users("g") == []
    assert await presence.repository.counts(["g"]) == {"g": 0}


@pytest.mark.gen_test
async def test_a_write_says_where_the_node_held_no_lease_before(presence):
    assert await write(presence, "a", {"g": {"u1": 1}, "h": {"u1": 1}}) == {"g", "h"}
    assert await write(presence, "a", {"g": {"u2": 1}, "k": {"u1": 1}}) == {"k"}
    assert await write(presence, "b", {"g": {"u1": 1}}) == {"g"}  # another node's lease is not this one's


@pytest.mark.gen_test
async def test_hostile_ids_round_trip(presence):
    group, users = '}weird "group" \\ 群', ['"quoted"', "ünïcode-😀", "back\\slash", "{brace}"]
    await presence.listen(group)
    await write(presence, "a", {group: {user: 1 for user in users}})
    assert [user.user_id for user in await presence.repository.users(group)] == sorted(users)
    assert await presence.repository.counts([group]) == {group: 4}
    assert await presence.heard(1) == [PresenceChanged(group, tuple(sorted(users)), (), 4)]


# -- announcing ----------------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_a_users_first_socket_on_any_node_joins_and_its_last_leaves(presence):
    await presence.listen("g")
    await write(presence, "a", {"g": {"u1": 1}})  # join
    await write(presence, "b", {"g": {"u1": 2}})  # held by a already: nothing
    await write(presence, "a", {"g": {"u1": 0}})  # still held by b: nothing
    await write(presence, "b", {"g": {"u1": 1}})  # fewer sockets, still there: nothing
    await write(presence, "b", {"g": {"u1": 0, "u2": 1}})  # the last socket out, and another user in
    assert await presence.heard(2) == [
        PresenceChanged("g", ("u1",), (), 1),
        PresenceChanged("g", ("u2",), ("u1",), 1),
    ]


@pytest.mark.gen_test
async def test_one_event_per_group_per_write_and_none_without_announce(presence):
    await presence.listen("g", "h")
    await write(presence, "a", {"g": {"u1": 1, "u2": 1}}, announce=False)
    await write(presence, "a", {"g": {"u3": 1, "u1": 0}, "h": {"u1": 1}})
    events = await presence.heard(2)
    assert sorted(events, key=lambda event: event.group_id) == [
        PresenceChanged("g", ("u3",), ("u1",), 2),
        PresenceChanged("h", ("u1",), (), 1),
    ]
    assert await presence.repository.counts(["g", "h"]) == {"g": 2, "h": 1}


@pytest.mark.gen_test
async def test_past_the_listed_maximum_an_event_tells_only_the_number_online(presence):
    await presence.listen("g")
    crowd = {f"u{i:03}": 1 for i in range(PRESENCE_LISTED_MAX + 1)}
    await write(presence, "a", {"g": crowd})
    await write(presence, "a", {"g": {"u000": 0, "u001": 0}})
    assert await presence.heard(2) == [
        PresenceChanged("g", (), (), PRESENCE_LISTED_MAX + 1),
        PresenceChanged("g", (), ("u000", "u001"), PRESENCE_LISTED_MAX - 1),
    ]


@pytest.mark.gen_test
async def test_dropping_a_node_makes_its_users_leave_at_once(presence):
    await presence.listen("g")
    await write(presence, "a", {"g": {"u1": 1, "u2": 1}})
    await write(presence, "b", {"g": {"u2": 1}})
    await presence.repository.drop("a", ["g", "never-written"], True)
    assert await presence.repository.users("g") == [OnlineUser("u2", 1)]
    assert await presence.heard(2) == [PresenceChanged("g", ("u1", "u2"), (), 2), PresenceChanged("g", (), ("u1",), 1)]
    assert await write(presence, "a", {"g": {"u1": 1}}) == {"g"}  # no lease left


# -- leases --------------------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_a_lapsed_node_is_not_counted_and_the_next_write_reports_its_users_leave(presence):
    await presence.listen("g")
    await write(presence, "a", {"g": {"u1": 1, "u2": 2}}, lease_s=presence.short_lease_s)
    await write(presence, "b", {"g": {"u2": 1}})
    await presence.outlive(presence.short_lease_s)
    # Read before any node removed it: a lapsed node's users are not online.
    assert await presence.repository.users("g") == [OnlineUser("u2", 1)]
    assert await presence.repository.counts(["g"]) == {"g": 1}
    assert await presence.repository.renew("b", ["g"], LEASE_S, True) == set()  # removes a: u1 left
    assert await presence.repository.counts(["g"]) == {"g": 1}
    assert await presence.heard(2) == [
        PresenceChanged("g", ("u1", "u2"), (), 2),
        PresenceChanged("g", (), ("u1",), 1),
    ]


@pytest.mark.gen_test
async def test_renewing_keeps_a_lease_and_reports_the_groups_that_lapsed(presence):
    lease = presence.short_lease_s * 2
    await write(presence, "a", {"g": {"u1": 1}, "h": {"u1": 1}}, lease_s=lease)
    await presence.outlive(lease * 0.6)
    assert await presence.repository.renew("a", ["g", "never-written"], lease, True) == {"never-written"}
    await presence.outlive(lease * 0.6)  # past the first deadline: g was renewed, h was not
    assert await presence.repository.users("g") == [OnlineUser("u1", 1)]
    assert await presence.repository.counts(["g", "h"]) == {"g": 1, "h": 0}
    assert await presence.repository.renew("a", ["g", "h"], lease, True) == {"h"}
    assert await write(presence, "a", {"h": {"u1": 1}}) == {"h"}  # written again in full by the node


@pytest.mark.gen_test
async def test_a_node_that_lapsed_and_comes_back_is_new_again(presence):
    await presence.listen("g")
    await write(presence, "a", {"g": {"u1": 1}}, lease_s=presence.short_lease_s)
    await presence.outlive(presence.short_lease_s)
    assert await write(presence, "a", {"g": {"u2": 1}}) == {"g"}  # u1 was reaped with the old lease
    assert await presence.repository.users("g") == [OnlineUser("u2", 1)]
    assert await presence.heard(2) == [
        PresenceChanged("g", ("u1",), (), 1),
        PresenceChanged("g", ("u2",), ("u1",), 1),
    ]


# -- Redis only ----------------------------------------------------------------------------------


@pytest.mark.gen_test
@pytest.mark.parametrize("presence", [pytest.param("redis", marks=pytest.mark.redis),
                                      pytest.param("cluster", marks=pytest.mark.redis)], indirect=True)
async def test_redis_keys_of_a_group_share_one_slot_and_expire(presence):
    layout = presence.layout
    for group in ("g", "}g", "{g}"):
        names = [layout.presence(group), layout.online(group), layout.presence_node(group, "a"), layout.channel(group)]
        if layout.cluster:
            assert len({slot_of(name) for name in names}) == 1, names
    if presence.raw is None:
        return
    await write(presence, "a", {"g": {"u1": 1}})
    for name in (layout.presence("g"), layout.online("g"), layout.presence_node("g", "a")):
        assert 0 < await presence.raw.pttl(name) <= (LEASE_S + 10) * 1000, name


@pytest.mark.gen_test
@pytest.mark.parametrize("presence", [pytest.param("redis", marks=pytest.mark.redis)], indirect=True)
async def test_redis_a_lapsed_node_whose_hash_is_gone_is_recounted(presence):
    await write(presence, "a", {"g": {"u1": 1, "u2": 1}}, lease_s=presence.short_lease_s)
    await write(presence, "b", {"g": {"u2": 1, "u3": 1}})
    await presence.outlive(presence.short_lease_s)
    await presence.raw.delete(STANDALONE.presence_node("g", "a"))  # as if its grace had passed unseen
    await presence.repository.renew("b", ["g"], LEASE_S, True)
    assert await presence.repository.counts(["g"]) == {"g": 2}
    assert await presence.raw.get(STANDALONE.online("g")) == "2"


# -- SQL only ------------------------------------------------------------------------------------


@pytest.mark.gen_test
@pytest.mark.parametrize("presence", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
async def test_sql_rows_of_nodes_long_gone_are_swept_from_groups_nobody_writes_to(presence):
    await write(presence, "a", {"g": {"u1": 1}}, lease_s=1.0)  # then killed: g is never written again
    await write(presence, "b", {"h": {"u2": 1}, "k": {"u3": 1}}, lease_s=3600)
    presence.clock.advance(1 + SWEEP_AFTER_MS / 1000 + 1)
    await presence.repository.renew("b", ["h"], 3600, True)

    async with presence.engine.connect() as connection:
        rows = (await connection.execute(select(presence_rows.c.group_id, presence_rows.c.user_id)
                                         .order_by(presence_rows.c.group_id))).all()
        leases = (await connection.execute(select(presence_nodes.c.group_id)
                                           .order_by(presence_nodes.c.group_id))).scalars().all()
    assert [tuple(row) for row in rows] == [("h", "u2"), ("k", "u3")]
    assert list(leases) == ["h", "k"]
