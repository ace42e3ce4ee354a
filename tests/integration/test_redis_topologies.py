"""Self-tests of the throw-away Redis Cluster and Sentinel topologies: start, fail over, rejoin."""

from __future__ import annotations

import time

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from tests.redis_server import find_binary, redis_required
from tests.redis_topologies import RedisClusterProcesses, RedisSentinelProcesses, find_cli

pytestmark = pytest.mark.redis

FAILOVER_TIMEOUT_S = 30
KEY = "fastim:topology:probe"


def _skip_or_fail(reason: str) -> None:
    if redis_required():
        pytest.fail(f"{reason} and FASTIM_REQUIRE_REDIS is set")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def binary() -> str:
    found = find_binary()
    if found is None:
        _skip_or_fail("no redis-server binary on PATH")
    return found


def _direct(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2, decode_responses=True)


def _cluster_client(cluster: RedisClusterProcesses) -> RedisCluster:
    nodes = [address.rpartition(":") for address in cluster.startup_nodes]
    return RedisCluster(
        startup_nodes=[ClusterNode(host, int(port)) for host, _, port in nodes],
        socket_timeout=2, socket_connect_timeout=2, decode_responses=True,
    )


def test_cluster_fails_over_and_the_old_master_rejoins_as_replica(binary):
    if find_cli(binary) is None:
        _skip_or_fail("no redis-cli binary next to redis-server nor on PATH")
    cluster = RedisClusterProcesses(binary, masters=3, replicas_per_master=1)
    client = None
    try:
        began = time.monotonic()
        cluster.start()
        print(f"cluster started in {time.monotonic() - began:.2f} s")
        assert len(cluster.startup_nodes) == 6
        assert len(cluster.masters()) == 3
        for address in cluster.startup_nodes:
            node = _direct(int(address.rpartition(":")[2]))
            try:
                info = node.cluster("INFO")
            finally:
                node.close()
            assert info["cluster_state"] == "ok" and int(info["cluster_slots_ok"]) == 16384, (address, info)

        client = _cluster_client(cluster)
        client.set(KEY, "before failover")
        slot = client.keyslot(KEY)
        _, old_port = cluster.master_for_slot(slot)
        master = _direct(old_port)
        try:
            assert master.execute_command("WAIT", 1, 1000) == 1  # the replica has the write
        finally:
            master.close()
        client.close()
        client = None

        killed_at = time.monotonic()
        assert cluster.kill_master_of_slot(slot) == old_port
        new_port, promoted_at = cluster.wait_for_promotion(slot, old_port, timeout=FAILOVER_TIMEOUT_S)
        print(f"cluster promotion seen {promoted_at - killed_at:.2f} s after the kill, "
              f"agreed by all after {time.monotonic() - killed_at:.2f} s")
        assert new_port != old_port
        assert cluster.master_for_slot(slot) == ("127.0.0.1", new_port)
        assert ("127.0.0.1", new_port) in cluster.masters() and ("127.0.0.1", old_port) not in cluster.masters()
        promoted = _direct(new_port)
        try:
            assert promoted.get(KEY) == "before failover"
        finally:
            promoted.close()
        client = _cluster_client(cluster)
        assert client.get(KEY) == "before failover"

        began = time.monotonic()
        cluster.restart(old_port)
        print(f"old master rejoined in {time.monotonic() - began:.2f} s")
        role = cluster.role(old_port)
        assert role[0] == "slave" and role[2] == new_port and role[3] == "connected", role
        assert len(cluster.masters()) == 3
        rejoined = _direct(old_port)
        try:
            rejoined.execute_command("READONLY")
            assert rejoined.get(KEY) == "before failover"
        finally:
            rejoined.close()

        cluster.flush()
        assert client.get(KEY) is None
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        if client is not None:
            client.close()
        cluster.cleanup()


def test_sentinels_fail_over_and_the_old_master_rejoins_as_replica(binary):
    topology = RedisSentinelProcesses(binary, master_name="fastim")
    sentinel = None
    try:
        began = time.monotonic()
        topology.start()
        print(f"sentinel topology started in {time.monotonic() - began:.2f} s")
        assert len(topology.sentinels) == 3 and topology.master_name == "fastim"
        _, old_port = topology.master()

        sentinel = Sentinel(topology.sentinel_addresses, socket_timeout=2, socket_connect_timeout=2)
        assert sentinel.discover_master("fastim") == ("127.0.0.1", old_port)
        master = sentinel.master_for("fastim", socket_timeout=2, decode_responses=True)
        master.set(KEY, "before failover")
        assert master.execute_command("WAIT", 1, 1000) == 1  # the replica has the write
        master.close()

        killed_at = time.monotonic()
        assert topology.kill_master() == old_port
        new_port, seen_at = topology.wait_for_failover(old_port, timeout=FAILOVER_TIMEOUT_S)
        print(f"sentinel failover seen {seen_at - killed_at:.2f} s after the kill, "
              f"agreed by all sentinels after {time.monotonic() - killed_at:.2f} s")
        assert new_port != old_port
        assert topology.master() == ("127.0.0.1", new_port)
        assert topology.role(new_port)[0] == "master"
        assert sentinel.discover_master("fastim") == ("127.0.0.1", new_port)
        master = sentinel.master_for("fastim", socket_timeout=2, decode_responses=True)
        assert master.get(KEY) == "before failover"
        master.close()

        began = time.monotonic()
        topology.restart(old_port)
        print(f"old master rejoined in {time.monotonic() - began:.2f} s")
        role = topology.role(old_port)
        assert role[0] == "slave" and role[2] == new_port and role[3] == "connected", role
        rejoined = _direct(old_port)
        try:
            assert rejoined.get(KEY) == "before failover"
        finally:
            rejoined.close()

        topology.flush()
        master = sentinel.master_for("fastim", socket_timeout=2, decode_responses=True)
        assert master.get(KEY) is None
        master.close()
    except BaseException:
        print(topology.logs())
        raise
    finally:
        if sentinel is not None:
            for node in sentinel.sentinels:
                node.close()
        topology.cleanup()
