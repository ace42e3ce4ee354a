"""The backends every port contract runs against: memory, Redis on fakeredis, real Redis, a real Redis Cluster."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import fakeredis
import pytest

from fastim.infrastructure.clock import ManualClock, SystemClock
from fastim.infrastructure.memory.broker import MemoryBroker
from fastim.infrastructure.memory.repositories import (
    MemoryMembershipRepository,
    MemoryMessageRepository,
    MemoryStorage,
    MemoryTokenRepository,
)
from fastim.infrastructure.redis.batcher import CommandBatcher
from fastim.infrastructure.redis.broker import RedisBroker
from fastim.infrastructure.redis.client import make_client
from fastim.infrastructure.redis.endpoint import Endpoint
from fastim.infrastructure.redis.cluster import ClusterCommands, parse_addresses
from fastim.infrastructure.redis.keys import CLUSTER
from fastim.infrastructure.redis.sharded_broker import ShardedBroker
from fastim.infrastructure.sql.engine import make_engine, migrate
from fastim.infrastructure.sql.repositories import (
    SqlMembershipRepository,
    SqlMessageRepository,
    SqlStorage,
    SqlTokenRepository,
)
from fastim.infrastructure.redis.pipeline import PipelinedConnection
from fastim.infrastructure.redis.repositories import (
    RedisMembershipRepository,
    RedisMessageRepository,
    RedisStorage,
    RedisTokenRepository,
)
from tests.fake_redis_server import FakeRedisServer


@dataclass
class Backend:
    name: str
    messages: Any
    memberships: Any
    tokens: Any
    storage: Any
    clock: Any
    new_broker: Any  # () -> a Broker; two calls are two nodes on the same storage (Redis: options of RedisBroker)
    raw: Any = None  # the underlying redis client, for assertions on keys
    anchor_index: bool = False  # anchors are found by an index, not by a bounded scan (SQL)

    async def elapse(self, seconds: float) -> None:
        """Let TTLs run: the manual clock moves, Redis really waits."""
        if isinstance(self.clock, ManualClock):
            self.clock.advance(seconds)
        else:
            await asyncio.sleep(seconds)


def _memory_backend() -> tuple[Backend, list]:
    clock = ManualClock()
    broker = MemoryBroker()  # one process: every "node" shares the in-process broker
    backend = Backend(
        name="memory",
        messages=MemoryMessageRepository(clock, broker),
        memberships=MemoryMembershipRepository(),
        tokens=MemoryTokenRepository(clock),
        storage=MemoryStorage(),
        clock=clock,
        new_broker=lambda: broker,
    )
    return backend, [broker]


def _redis_backend(name: str, new_client, url: str, new_commands=None) -> tuple[Backend, list]:
    """The Redis adapters on ``new_client()``; their commands through ``new_commands()`` when given (as a node does).

    Brokers receive on a connection of their own to ``url``.
    """
    client = new_client()
    closables: list = [client]

    def commands():
        if new_commands is None:
            return None  # the adapters' default: a CommandBatcher on the client
        connection = new_commands()
        closables.append(connection)
        return connection

    def new_broker(**options):
        connection = commands()
        if connection is None:
            broker_client = new_client()
            closables.append(broker_client)
            connection = CommandBatcher(broker_client)
        broker = RedisBroker(Endpoint(url), connection, **options)
        closables.append(broker)
        return broker

    shared = commands()
    backend = Backend(
        name=name,
        messages=RedisMessageRepository(client, shared),
        memberships=RedisMembershipRepository(client, shared),
        tokens=RedisTokenRepository(client, shared),
        storage=RedisStorage(client),
        clock=SystemClock(),
        new_broker=new_broker,
        raw=client,
    )
    return backend, closables


def _cluster_backend(cluster) -> tuple[Backend, list]:
    """The Redis adapters on a Redis Cluster, as a node in cluster mode has them."""
    startup = parse_addresses(",".join(cluster.startup_nodes))
    commands = ClusterCommands(startup)
    closables: list = [commands]

    def new_broker():
        node_commands = ClusterCommands(startup)
        broker = ShardedBroker(node_commands)
        closables.extend([node_commands, broker])
        return broker

    backend = Backend(
        name="cluster",
        messages=RedisMessageRepository(None, commands, layout=CLUSTER),
        memberships=RedisMembershipRepository(None, commands),
        tokens=RedisTokenRepository(None, commands),
        storage=RedisStorage(commands),
        clock=SystemClock(),
        new_broker=new_broker,
    )
    return backend, closables


def _sql_backend(name: str, url: str, io_loop) -> tuple[Backend, list]:
    """The SQL adapters on ``url``, their schema migrated; announcements on one in-process broker."""
    engine = make_engine(url)
    clock = ManualClock()
    broker = MemoryBroker()
    messages = SqlMessageRepository(engine, clock, broker)
    backend = Backend(
        name=name,
        messages=messages,
        memberships=SqlMembershipRepository(engine),
        tokens=SqlTokenRepository(engine, clock),
        storage=SqlStorage(engine),
        clock=clock,
        new_broker=lambda: broker,
        anchor_index=True,
    )
    io_loop.run_sync(lambda: migrate(engine))

    class Disposal:
        async def aclose(self) -> None:
            await messages.close()
            await engine.dispose()

    return backend, [broker, Disposal()]


@pytest.fixture(params=[
    "memory",
    "fakeredis",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("cluster", marks=pytest.mark.redis),
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
])
def backend(request, io_loop):
    if request.param == "memory":
        backend, closables = _memory_backend()
    elif request.param == "fakeredis":
        server = fakeredis.FakeServer()
        over_tcp = FakeRedisServer(server)
        backend, closables = _redis_backend(
            "fakeredis", lambda: fakeredis.FakeAsyncRedis(server=server, decode_responses=True), over_tcp.url
        )
        closables.insert(0, over_tcp)  # closed last
    elif request.param == "cluster":
        backend, closables = _cluster_backend(request.getfixturevalue("fresh_redis_cluster"))
    elif request.param == "sqlite":
        path = request.getfixturevalue("tmp_path") / "chat.db"
        backend, closables = _sql_backend("sqlite", f"sqlite:///{path}", io_loop)
    elif request.param == "postgres":
        database = request.getfixturevalue("postgres_database")
        io_loop.run_sync(database.truncate)
        backend, closables = _sql_backend("postgres", database.url, io_loop)
    else:
        server = request.getfixturevalue("fresh_redis")
        backend, closables = _redis_backend(
            "redis", lambda: make_client(server.url), server.url, lambda: PipelinedConnection(server.url)
        )
    yield backend

    async def close_all():
        for closable in reversed(closables):
            if hasattr(closable, "aclose"):
                await closable.aclose()
            else:
                await closable.close()

    io_loop.run_sync(close_all)


async def wait_for(predicate, timeout: float = 5.0, interval: float = 0.01) -> None:
    """Poll an async or sync predicate until it holds; fail the test after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


async def wait_subscribed(backend: Backend, group_id: str, count: int = 1) -> None:
    """Redis confirms SUBSCRIBE asynchronously: wait until the server counts the subscribers."""
    if backend.raw is None:
        return

    async def subscribed():
        [(_, number)] = await backend.raw.pubsub_numsub(f"mq:{group_id}")
        return number >= count

    await wait_for(subscribed)
