"""Failover under live traffic (issue 14): a Redis Cluster master, then a Sentinel-watched master, SIGKILLed.

Two real nodes, real redis-server processes, clients on WebSockets: senders on
node a, watchers on node b. A master is killed while every group talks; the
tests check that the groups on other shards keep flowing with their delivery
latency, that the killed shard's groups flow again within 10 s of the
replica's promotion with nobody reconnecting, that every watcher sees one
ordered stream (consecutive seqs, nothing twice), that with
``redis_wait_replicas = 1`` no acknowledged message is lost, and that a
client away during the failover resumes with everything it missed.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import pytest
from redis.crc import key_slot

from tests.interfaces.ws_client import Client
from tests.processes import ServeProcess, start_nodes
from tests.redis_topologies import RedisClusterProcesses, RedisSentinelProcesses

pytestmark = pytest.mark.redis

SEND_INTERVAL_S = 0.05  # 20 messages/s per group
WARMUP_S = 2.0
AFTER_PROMOTION_S = 6.0
RESUME_WITHIN_S = 10.0
# The promotion is watched from a thread of this process: polled often, it would hold the GIL the
# watchers' timestamps need.
PROMOTION_POLL_S = 0.25
NODE_ENV = {"FASTIM_IM_RATE_LIMIT": "10000", "FASTIM_IM_RATE_BURST": "10000", "FASTIM_STORAGE_REDIS_WAIT_REPLICAS": "1"}


@dataclass
class Group:
    """One group's traffic: what its sender sent and had acknowledged, what its watcher received."""

    name: str
    sender: Client | None = None
    watcher: Client | None = None
    sent: dict[str, float] = field(default_factory=dict)  # info -> time sent
    acked: set[str] = field(default_factory=set)  # infos whose echo came back to the sender
    refused: int = 0  # error frames: answered "not sent" (or "unknown")
    received: list[tuple[float, dict]] = field(default_factory=list)  # (time, frame) at the watcher
    readers: list[asyncio.Task] = field(default_factory=list)

    def latencies(self, start: float, end: float) -> list[float]:
        return [at - self.sent[frame["info"]] for at, frame in self.received
                if frame.get("info") in self.sent and start <= self.sent[frame["info"]] < end]


async def read_all(client: Client, on_frame) -> None:
    while True:
        text = await client.connection.read_message()
        if text is None:
            return
        on_frame(time.monotonic(), json.loads(text))


async def open_group(group: Group, a: ServeProcess, b: ServeProcess) -> None:
    group.sender = await Client.connect(a.base_url, f"/group/chat/{group.name}/sender/any")
    group.watcher = await Client.connect(b.base_url, f"/group/chat/{group.name}/watcher/any")
    for client in (group.sender, group.watcher):
        assert "list" in await client.json()

    def at_sender(at: float, frame: dict) -> None:
        if "info" in frame and frame.get("userId") == "sender":
            group.acked.add(frame["info"])
        elif "code" in frame:
            group.refused += 1

    def at_watcher(at: float, frame: dict) -> None:
        group.received.append((at, frame))

    group.readers = [asyncio.ensure_future(read_all(group.sender, at_sender)),
                     asyncio.ensure_future(read_all(group.watcher, at_watcher))]


async def talk(groups: list[Group], stop: asyncio.Event) -> None:
    count = 0
    while not stop.is_set():
        count += 1
        for group in groups:
            info = f"{group.name} #{count}"
            group.sent[info] = time.monotonic()
            await group.sender.send(info)
        await asyncio.sleep(SEND_INTERVAL_S)


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


def check_one_ordered_stream(group: Group) -> None:
    """Consecutive seqs in one epoch, nothing twice, every acknowledged message there."""
    frames = [frame for _, frame in group.received if "seq" in frame]
    seqs = [frame["seq"] for frame in frames]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"{group.name}: seqs {seqs}"
    epochs = {frame["id"].rsplit("-", 1)[0] for frame in frames}
    assert len(epochs) == 1, f"{group.name}: the stream restarted: {epochs}"
    infos = [frame["info"] for frame in frames]
    assert len(infos) == len(set(infos)), f"{group.name}: a message came twice"
    missing = group.acked - set(infos)
    assert not missing, f"{group.name}: {len(missing)} acknowledged messages never reached the watcher: {sorted(missing)[:5]}"


async def settled(groups: list[Group], quiet_s: float = 1.0, limit_s: float = 15.0) -> None:
    """Wait until no frame has arrived for ``quiet_s`` (the last answers and deliveries), ``limit_s`` at most."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        last = max((group.received[-1][0] for group in groups if group.received), default=0.0)
        if time.monotonic() - last >= quiet_s:
            return
        await asyncio.sleep(0.1)


async def resume(node: ServeProcess, group: str, since: int, epoch: str) -> dict:
    client = await Client.connect(node.base_url, f"/group/chat/{group}/returner/any?since={since}&epoch={epoch}")
    try:
        return await client.json()
    finally:
        client.close()


async def run_failover(a: ServeProcess, b: ServeProcess, groups: list[Group], victims: set[str], kill, wait_promoted):
    """Traffic on every group; ``kill()`` a master; until ``wait_promoted()`` (its time) and a while after."""
    for group in groups:
        await open_group(group, a, b)
    stop = asyncio.Event()
    talking = asyncio.ensure_future(talk(groups, stop))
    try:
        await asyncio.sleep(WARMUP_S)
        returner_group = next(group for group in groups if group.name in victims)
        last = returner_group.received[-1][1]
        away_since, away_epoch = last["seq"], last["id"].rsplit("-", 1)[0]
        killed_at = time.monotonic()
        kill()
        promoted_at = await asyncio.to_thread(wait_promoted)
        await asyncio.sleep(AFTER_PROMOTION_S)
    finally:
        stop.set()
        await talking
    await settled(groups)
    opening = await resume(b, returner_group.name, away_since, away_epoch)
    for group in groups:
        for client in (group.sender, group.watcher):
            assert client.close_code is None, f"{group.name}: a socket was closed: {client.close_code}"
            client.close()
        for reader in group.readers:
            reader.cancel()
    return killed_at, promoted_at, returner_group, away_since, opening


def check_resumed_in_time(group: Group, promoted_at: float) -> float:
    """How long after the promotion the watcher received the first message sent after it."""
    after = [at for at, frame in group.received if frame.get("info") in group.sent
             and group.sent[frame["info"]] >= promoted_at]
    last = group.received[-1][0] - promoted_at if group.received else None
    assert after, (f"{group.name}: nothing sent after the promotion was delivered ({group.refused} sends refused, "
                   f"{len(group.acked)} acknowledged, the watcher's last frame at {last} s from the promotion)")
    waited = min(after) - promoted_at
    assert waited <= RESUME_WITHIN_S, f"{group.name}: delivery resumed {waited:.1f} s after the promotion"
    return waited


def check_resume(group: Group, since: int, opening: dict) -> None:
    assert opening["recovered"] is True, opening
    listed = [event for event in opening["list"] if "info" in event]
    assert [event["seq"] for event in listed] == list(range(since + 1, since + 1 + len(listed)))
    assert group.acked - {event["info"] for event in listed} <= {
        frame["info"] for _, frame in group.received if frame.get("seq", 0) <= since
    }, "an acknowledged message sent while the client was away is missing from its resume"


@pytest.mark.gen_test(timeout=120)
async def test_a_cluster_master_killed_under_traffic(tmp_path, redis_binary):
    cluster = RedisClusterProcesses(redis_binary)
    cluster.start()
    nodes: list[ServeProcess] = []
    try:
        startup = ",".join(cluster.startup_nodes)
        nodes = start_nodes([ServeProcess(tmp_path, name=name, backend="redis", environ=NODE_ENV,
                                          args=["--redis-cluster", startup]) for name in ("a", "b")])
        a, b = nodes
        owner = {f"g{i}": cluster.master_for_slot(key_slot(f"g{i}".encode())) for i in range(60)}
        victim = owner["g0"]
        victims = [g for g in owner if owner[g] == victim][:3]
        others = [g for g in owner if owner[g] != victim]
        others = [next(g for g in others if owner[g] == shard) for shard in {owner[g] for g in others}]
        groups = [Group(name) for name in [*victims, *others]]
        old_port = victim[1]
        killed_at, promoted_at, returner, since, opening = await run_failover(
            a, b, groups, set(victims),
            kill=lambda: cluster.kill_master_of_slot(key_slot(b"g0")),
            wait_promoted=lambda: cluster.wait_for_promotion(key_slot(b"g0"), old_port, poll_s=PROMOTION_POLL_S)[1],
        )
        for group in groups:
            check_one_ordered_stream(group)
        for group in groups:
            if group.name in victims:
                waited = check_resumed_in_time(group, promoted_at)
                print(f"{group.name} (killed shard): promoted {promoted_at - killed_at:.1f} s after the kill, "
                      f"delivering again {waited:.2f} s after; {len(group.acked)} acknowledged, {group.refused} refused")
            else:  # the other shards flowed all along, as fast as before
                before = group.latencies(0, killed_at)
                during = group.latencies(killed_at, promoted_at + 1.0)
                assert during, f"{group.name}: nothing delivered during the failover"
                assert p99(during) <= max(0.05, 3 * p99(before)), (group.name, p99(before), p99(during))
                print(f"{group.name} (other shard): p99 {p99(before) * 1000:.1f} ms before, "
                      f"{p99(during) * 1000:.1f} ms during the failover ({len(during)} messages)")
        check_resume(returner, since, opening)
        # Sharded pub/sub: each group's channel is subscribed on its own shard only.
        for group in groups:
            shard = cluster.master_for_slot(key_slot(group.name.encode()))
            for master in cluster.masters():
                subscribed = cluster.shard_subscribers(master[1], f"mq:{{{group.name}}}")
                assert subscribed == (2 if master == shard else 0), (group.name, master, subscribed)
            assert cluster.classic_channels(shard[1]) <= {"fastim:notices"}
    finally:
        for node in nodes:
            node.stop()
        cluster.cleanup()


@pytest.mark.gen_test(timeout=120)
async def test_a_sentinel_master_killed_under_traffic(tmp_path, redis_binary):
    topology = RedisSentinelProcesses(redis_binary)
    topology.start()
    nodes: list[ServeProcess] = []
    try:
        args = ["--redis-sentinel", ",".join(topology.sentinels), "--redis-sentinel-master", topology.master_name,
                "--redis-url", "redis://127.0.0.1:1/0"]  # Sentinel says where; the URL only gives the database
        nodes = start_nodes([ServeProcess(tmp_path, name=name, backend="redis", environ=NODE_ENV, args=args)
                             for name in ("a", "b")])
        a, b = nodes
        groups = [Group(f"s{i}") for i in range(3)]
        old_port = topology.master()[1]
        _, promoted_at, returner, since, opening = await run_failover(
            a, b, groups, {group.name for group in groups},
            kill=topology.kill_master,
            wait_promoted=lambda: topology.wait_for_failover(old_port, poll_s=PROMOTION_POLL_S)[1],
        )
        for group in groups:
            check_one_ordered_stream(group)
            waited = check_resumed_in_time(group, promoted_at)
            print(f"{group.name}: delivering again {waited:.2f} s after the promotion; "
                  f"{len(group.acked)} acknowledged, {group.refused} refused")
        check_resume(returner, since, opening)
    finally:
        for node in nodes:
            node.stop()
        topology.cleanup()
