"""``python -m benchmarks.storm``: a node restarts and all its clients come back at once, resuming by seq.

5,000 chat sockets in 50 groups are open on node A; A stops (1001 to every
client); meanwhile another node stores 20 messages in each group; A starts
again and every client reconnects at once with ``?since=<its last seq>&epoch=``.
The table says how long it took until every client had its opening frame, the
latency of each client's resume (connect to opening frame), how many resumes
were whole (``recovered: true``, with exactly the 20 missed messages), how many
storage reads served them (the node's ``fastim_opening_reads_total``) and how
many scripts Redis ran meanwhile (every storage call of a node is one: the
reads, and a join per socket, as ``auto_join`` opens do). Node on the server
CPU, clients and Redis on the other, as in ``benchmarks.run``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import urllib.request

import redis
import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from benchmarks.cluster import Cluster, NodeProcess, Pinning, raise_fd_limit
from benchmarks.loadgen import percentile_ms
from benchmarks.procstats import cpu_seconds

GROUPS = 50
PER_GROUP = 100
MISSED = 20  # messages stored in each group while its clients are away
CONCURRENCY = 1000  # handshakes in flight at once: "all at once", short of overflowing the accept backlog
TIMEOUT_S = 60.0


class Resumer(WSListener):
    """One client: its opening frame, and when it came."""

    def __init__(self) -> None:
        super().__init__()
        self.opening: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
        self.transport: WSTransport | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
        elif frame.msg_type == WSMsgType.TEXT and not self.opening.done():
            self.opening.set_result(json.loads(frame.get_payload_as_bytes()))

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.opening.done():
            self.opening.set_exception(ConnectionError("closed before the opening frame"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.disconnect(graceful=False)


async def connect_all(urls: list[str]) -> tuple[list[tuple[Resumer, dict, float]], float]:
    """Open every URL (at most CONCURRENCY handshakes at once): (client, opening, seconds to it), and the wall time."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(url: str) -> tuple[Resumer, dict, float]:
        async with gate:
            started = time.monotonic()
            _, client = await ws_connect(Resumer, url, websocket_handshake_timeout=TIMEOUT_S)
            opening = await asyncio.wait_for(client.opening, TIMEOUT_S)
            return client, opening, time.monotonic() - started

    started = time.monotonic()
    results = await asyncio.gather(*(one(url) for url in urls))
    return results, time.monotonic() - started


def metric(node: NodeProcess, sample: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{node.port}/metrics", timeout=5) as answer:
        for line in answer.read().decode().splitlines():
            name, _, value = line.rpartition(" ")
            if name == sample:
                return float(value)
    return 0.0


async def send_missed(node: NodeProcess) -> list[Resumer]:
    """MISSED messages in each group, sent through node B (wait_stored tells when they are in)."""
    async def group(index: int) -> Resumer:
        _, client = await ws_connect(Resumer, f"{node.ws_url}/group/chat/g{index}/sender/bench")
        await client.opening
        for i in range(MISSED):
            client.transport.send(WSMsgType.TEXT, f"missed {i}".encode())
        return client

    return await asyncio.gather(*(group(index) for index in range(GROUPS)))


def wait_stored(redis_url: str, expected_seq: dict[str, int], timeout_s: float = 30) -> None:
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            stored = {g: int(client.hget(f"fastim:stream:{g}", "seq") or 0) for g in expected_seq}
            if all(stored[g] >= seq for g, seq in expected_seq.items()):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the missed messages were not all stored: {stored}")
            time.sleep(0.05)
    finally:
        client.close()


def script_calls(redis_url: str) -> int:
    """Scripts Redis ran so far: every storage call of a node is one (the commands inside them not counted)."""
    client = redis.Redis.from_url(redis_url)
    try:
        stats = client.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval"))
    finally:
        client.close()


async def storm(cluster: Cluster) -> dict[str, float]:
    prefix = cluster.pinning.server_prefix()
    settings = {"FASTIM_IM_LIST_NUM": "20"}
    node_a = NodeProcess(cluster.redis.url, cluster.workdir, prefix, "a", settings).start()
    node_b = NodeProcess(cluster.redis.url, cluster.workdir, prefix, "b", settings).start()
    node_a.wait_until_serving()
    node_b.wait_until_serving()
    try:
        urls = [f"{node_a.ws_url}/group/chat/g{g}/u{g}-{i}/bench" for g in range(GROUPS) for i in range(PER_GROUP)]
        first, _ = await connect_all(urls)
        positions = [(opening["seq"], opening["epoch"]) for _, opening, _ in first]
        node_a.stop()  # 1001 to every client
        for client, _, _ in first:
            client.close()
        senders = await send_missed(node_b)
        wait_stored(cluster.redis.url, {f"g{g}": MISSED for g in range(GROUPS)})
        for sender in senders:
            sender.close()

        node_a = NodeProcess(cluster.redis.url, cluster.workdir, prefix, "a-again", settings).start()
        node_a.wait_until_serving()
        scripts_before, cpu_before = script_calls(cluster.redis.url), cpu_seconds(node_a.pid)
        back = [f"{node_a.ws_url}/group/chat/g{g}/u{g}-{i}/bench?since={seq}&epoch={epoch}"
                for (g, i), (seq, epoch) in zip(((g, i) for g in range(GROUPS) for i in range(PER_GROUP)), positions)]
        resumed, wall_s = await connect_all(back)
        scripts = script_calls(cluster.redis.url) - scripts_before
        node_cpu = cpu_seconds(node_a.pid) - cpu_before
        whole = sum(
            1 for (_, opening, _), (seq, _) in zip(resumed, positions)
            if opening.get("recovered") is True and [e["seq"] for e in opening["list"]] == list(range(seq + 1, seq + MISSED + 1))
        )
        latencies = sorted(int(seconds * 1e9) for _, _, seconds in resumed)
        reads = metric(node_a, 'fastim_opening_reads_total{kind="tail"}') + metric(
            node_a, 'fastim_opening_reads_total{kind="page"}')
        for client, _, _ in resumed:
            client.close()
        return {
            "clients": len(resumed), "groups": GROUPS, "missed": MISSED, "wall_s": wall_s,
            "p50_ms": percentile_ms(latencies, 0.50), "p99_ms": percentile_ms(latencies, 0.99),
            "max_ms": latencies[-1] / 1e6, "whole": whole, "reads": reads, "scripts": scripts,
            "node_cpu_s": node_cpu,
        }
    finally:
        node_a.stop()
        node_b.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.storm", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    args = parser.parse_args(argv)
    raise_fd_limit()
    pinning = Pinning.choose(args.server_cpu, args.client_cpu)
    pinning.pin_this_process()
    rows = []
    with Cluster(pinning) as cluster:
        for _ in range(args.runs):
            cluster.redis.flush()
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                rows.append(runner.run(storm(cluster)))
    print("| run | clients | groups | missed per group | all resumed in s | p50 ms | p99 ms | max ms | "
          "whole resumes | storage reads | Redis scripts run | node CPU s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for number, row in enumerate(rows, 1):
        print(f"| {number} | {row['clients']:,} | {row['groups']} | {row['missed']} | {row['wall_s']:.2f} | "
              f"{row['p50_ms']:.0f} | {row['p99_ms']:.0f} | {row['max_ms']:.0f} | {row['whole']:,} | "
              f"{row['reads']:.0f} | {row['scripts']:,} | {row['node_cpu_s']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
