"""The sharded broker follows a slot that moves under it: a manual failover demotes the master it subscribed on.

On a real Redis Cluster. ``CLUSTER FAILOVER`` on a replica swaps it with its master without losing a write;
the demoted master unsubscribes its sharded subscribers by itself (a server-side ``sunsubscribe``). The
broker must subscribe on the new master, hand the group to the resume listeners, and deliver what is
published there, without anything from the caller.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
from redis.crc import key_slot

from fastim.domain.model import Message
from fastim.infrastructure.redis.cluster import ClusterCommands, parse_addresses
from fastim.infrastructure.redis.sharded_broker import ShardedBroker

pytestmark = pytest.mark.redis

SWAP_TIMEOUT_S = 20.0


def replica_of(cluster, master_port: int) -> int:
    nodes = cluster._a_view()
    master = next(node for node in nodes if node.port == master_port)
    return next(node.port for node in nodes if node.master_id == master.id and not node.failed)


async def wait_for(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.mark.gen_test(timeout=60)
async def test_a_demoted_master_s_channels_follow_the_slot_and_the_group_catches_up(fresh_redis_cluster):
    cluster = fresh_redis_cluster
    slot = key_slot(b"moving")
    old_master = cluster.master_for_slot(slot)[1]
    replica = replica_of(cluster, old_master)
    commands = ClusterCommands(parse_addresses(",".join(cluster.startup_nodes)))
    broker = ShardedBroker(commands, probe_interval_s=0.2, probe_timeout_s=1.0)
    heard, resumed = [], []
    broker.on_resume(resumed.append)
    try:
        await broker.subscribe("moving", lambda group, event: heard.append(event))
        assert cluster.shard_subscribers(old_master, "mq:{moving}") == 1

        client = redis.Redis(host="127.0.0.1", port=replica, socket_timeout=5)
        try:
            client.execute_command("CLUSTER", "FAILOVER")
        finally:
            client.close()
        await wait_for(lambda: cluster.master_for_slot(slot)[1] == replica, SWAP_TIMEOUT_S)

        await wait_for(lambda: cluster.shard_subscribers(replica, "mq:{moving}") == 1, 10)
        assert cluster.shard_subscribers(old_master, "mq:{moving}") == 0
        await wait_for(lambda: frozenset({"moving"}) in resumed, 5)
        publisher = ClusterCommands(parse_addresses(",".join(cluster.startup_nodes)))
        try:
            await ShardedBroker(publisher).publish(Message("moving", "u", "after the move", 1))
        finally:
            await publisher.aclose()
        await wait_for(lambda: heard, 5)
        assert heard[0].info == "after the move"
        assert broker.healthy
    finally:
        await broker.close()
        await commands.aclose()


@pytest.mark.gen_test(timeout=30)
async def test_probes_come_back_so_a_working_connection_is_kept(fresh_redis_cluster):
    commands = ClusterCommands(parse_addresses(",".join(fresh_redis_cluster.startup_nodes)))
    broker = ShardedBroker(commands, probe_interval_s=0.1, probe_timeout_s=0.5)
    try:
        await broker.subscribe_many([f"k{i}" for i in range(12)], lambda group, event: None)
        assert len(broker._shards) == 3  # the groups are spread over every shard
        await asyncio.sleep(2.0)  # twenty probes per shard
        assert broker.reconnects == 0 and broker.healthy
        assert all(shard.probe._count >= 10 for shard in broker._shards.values())
    finally:
        await broker.close()
        await commands.aclose()


@pytest.mark.gen_test(timeout=30)
async def test_a_shard_connection_that_stops_delivering_is_replaced_and_its_groups_catch_up(fresh_redis_cluster):
    commands = ClusterCommands(parse_addresses(",".join(fresh_redis_cluster.startup_nodes)))
    broker = ShardedBroker(commands, probe_interval_s=0.1, probe_timeout_s=0.4)
    resumed: list[frozenset] = []
    broker.on_resume(resumed.append)
    heard: list = []
    try:
        await broker.subscribe("quiet", lambda group, event: heard.append(event))
        (shard,) = broker._shards.values()
        deliver = shard.message

        def silent(channel: str, data: str) -> None:  # the connection stays up and delivers nothing
            if broker.reconnects:
                deliver(channel, data)

        shard.message = silent
        await wait_for(lambda: not broker.healthy, 5)
        await wait_for(lambda: broker.reconnects == 1 and frozenset({"quiet"}) in resumed, 5)
        await wait_for(lambda: broker.healthy, 5)
        await broker.publish(Message("quiet", "u", "after", 1))
        await wait_for(lambda: heard, 5)
    finally:
        await broker.close()
        await commands.aclose()
